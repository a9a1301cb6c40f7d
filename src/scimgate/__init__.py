"""scimgate: a SCIM 2.0 endpoint that makes HAProxy enforce what the identity provider says.

Rooms, top to bottom (each package docstring says what it does *not* do; docs/architecture.md
has the table, the threads and the walk of a deactivation):

- ``cli``       the `scimgate` command, one thin module per command group
- ``instance``  wiring, the instance directory, serving, the local HAProxy, `up`, the demo
- ``api``       the ASGI application (thin HTTP layer over the use cases)
- ``app``       use cases: the SCIM service, bulk, tokens, identities -> map entries, reports
- ``sync``      change-log followers that converge every HAProxy target
- ``audit``     hash-chained audit events, verification, replay, stories
- ``store``     SQL: tables, transactions, the outbox, the filter compiler
- ``haproxy``   the Runtime API adapter, map files, process control
- ``policy``    pure policy model and compilers (map entries, HAProxy config)
- ``scim``      pure SCIM protocol rules (schemas, filters, PATCH, ETags, errors)
- ``metrics``, ``logs``, ``config``: used by every layer
"""

__version__ = "0.1.0"
