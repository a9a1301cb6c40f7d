"""Durable state: SQLAlchemy tables, migrations and the transactions that write them.

Does: SQL. One transaction per SCIM operation writes the resource rows, the audit event and
the desired HAProxy map entries with their change-log rows together. SQLite (WAL, embedded
default) and PostgreSQL are both first-class.
Does not: SCIM protocol rules (``scimgate.scim``), policy decisions or which entries a user
gets (``scimgate.app.enforcement``), the audit chain (``scimgate.audit`` writes through a
transaction of ours), talking to HAProxy (``scimgate.sync``). It imports no room above it:
a committed write announces its change-log rows to listeners it knows nothing of
(``Database.on_commit``).
"""
