"""The ASGI application: SCIM routes under /scim/v2, health and metrics.

Does: parse HTTP (content type, size limits, JSON, query parameters), authenticate bearer
tokens, call the handler (``scimgate.app.service``), shape responses and errors.
Does not: SCIM rules (``scimgate.scim``), SQL (``scimgate.store``), HAProxy (``scimgate.sync``).
"""
