"""scimgate: a SCIM 2.0 endpoint that makes HAProxy enforce what the identity provider says.

Packages, each with one responsibility (each package docstring says what it does *not* do):

- ``scim``     pure SCIM protocol rules (schemas, filters, PATCH, errors, list queries)
- ``store``    SQLAlchemy tables and transactions (SQLite or PostgreSQL)
- ``policy``   pure policy model and compilers (map entries, HAProxy config)
- ``haproxy``  Runtime API client, map files, process control
- ``sync``     change-log followers that converge every HAProxy target
- ``audit``    hash-chained audit events and their verification
- ``api``      the ASGI application (thin HTTP layer)
"""

__version__ = "0.1.0"
