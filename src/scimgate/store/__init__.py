"""Durable state: SQLAlchemy tables, migrations and the transactions that write them.

Does: SQL. One transaction per SCIM operation writes the resource rows, the audit event and
the desired HAProxy map entries with their change-log rows together. SQLite (WAL, embedded
default) and PostgreSQL are both first-class.
Does not: SCIM protocol rules (``scimgate.scim``), policy decisions (``scimgate.policy``),
talking to HAProxy (``scimgate.sync``).
"""
