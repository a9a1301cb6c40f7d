"""Audit trail: hash-chained events, their verification and export.

Does: define the canonical event encoding and hash chain (pure, ``chain``), append events inside
the caller's transaction and read/verify them (``log``).
Does not: decide what is audited (callers do), talk HTTP or HAProxy.
"""
