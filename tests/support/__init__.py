"""Test helpers shared by the unit, integration and e2e suites (no fixtures here; those are
in tests/fixtures/):

- ``scim``: the RFC URNs, request bodies, user and group creation over a real server;
- ``net``: free loopback ports;
- ``haproxy``: the one HAProxy launcher (master-worker, stopped by PID);
- ``up``: a real `scimgate up` process (start, stack.json, stop, no leaked HAProxy);
- ``stack``: what e2e tests check on it (live maps, desired state, map files, convergence);
- ``rawhttp``: HTTP/1.x written byte for byte.
"""
