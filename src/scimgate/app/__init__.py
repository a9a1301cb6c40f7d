"""Use cases: what the product does, each in one place, called by the API, the CLI and the
instance wiring.

Does: the SCIM service (one transaction per operation: resource rows, map entries and their
change log, audit event), Bulk, tokens, identities → map entries under the policy.
Does not: HTTP (``scimgate.api``), argument parsing (``scimgate.cli``), SQL text
(``scimgate.store``), SCIM rules (``scimgate.scim``), or talking to HAProxy (``scimgate.sync``).
"""
