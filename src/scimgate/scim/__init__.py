"""SCIM 2.0 protocol rules (RFC 7643 / RFC 7644), pure.

Does: schema definitions, payload validation and normalisation, filter parsing, PATCH
application, attribute projection, the error model.
Does not: any I/O. No database, no HTTP, no clock reads except where a caller passes time in.
SQL compilation of filters lives in ``scimgate.store.filter_sql`` (the store owns SQL).
"""
