"""One scimgate instance: its directory, its wiring, its processes.

Does: wire the store, the policy, the use cases, the API and the sync engine from Settings;
lay out and fill an instance directory (policy, keys, certificates, HAProxy config, map
files); start the local HAProxy; follow the issuer's JWKS and reload that HAProxy when its
keys change; serve the API on its listeners; `scimgate up`; the demo.
Does not: SCIM rules, SQL, use-case logic or Runtime API commands: it connects the rooms
that own them.
"""
