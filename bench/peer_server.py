"""The peer: python-scim's scim2-server (0.8.3) as an ASGI application under uvicorn,
in-memory, with a static bearer token (the same check its own CLI does).

Built the way ``scim2_server.testserver.cli`` builds its application (default schemas,
resource types and service provider config), but with the package's ASGI application and
``AsyncInMemoryStorage`` instead of the stdlib WSGI server.

    python -m bench.peer_server --port 8123 --token SECRET
"""

from __future__ import annotations

import argparse
import secrets

import uvicorn
from scim2_models import ScimProvider, UnauthorizedException
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.service import ScimService
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)


class BearerASGIApplication(ASGIApplication):
    def __init__(self, *args: object, token: str, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.token = token

    def check_auth(self, request: ScimRequest) -> None:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token != self.token:
            raise UnauthorizedException


def build_app(token: str) -> ASGIApplication:
    config = load_default_service_provider_config()
    config.authentication_schemes = [*(config.authentication_schemes or []), BEARER_TOKEN_SCHEME]
    provider = ScimProvider.from_discovery(
        load_default_schemas().values(), load_default_resource_types().values(), config=config
    )
    service = ScimService(provider, secret=secrets.token_urlsafe(32))
    return BearerASGIApplication(AsyncInMemoryStorage(), provider, service, token=token)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True)
    a = p.parse_args()
    # Same uvicorn settings as `scimgate serve` (cli.run_server): auto loop/http, no access log.
    uvicorn.run(
        build_app(a.token),
        host="127.0.0.1",
        port=a.port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
