"""The ASGI application: SCIM routes under /scim/v2, health and metrics.

Does: parse HTTP (content type, size limits, JSON, query parameters), take the bearer
secret and answer 401/429, call the use cases (``scimgate.app``), shape responses and
errors (RFC 7644 §3.12); an explicit route table (``app.py``) over ``routes/``.
Does not: SCIM rules (``scimgate.scim``), SQL or the store, the sync engine (it waits for
HAProxy through ``app.propagation``), or the listening sockets (``instance.listeners``).
"""
