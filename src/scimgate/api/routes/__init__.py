"""The SCIM routes, one module per kind of endpoint; ``api.app`` puts them in one explicit
route table. Each handler parses what its endpoint takes, calls a use case through the
request pipeline (``api.pipeline.Api.call``) and shapes the response."""
