"""The console's ASGI app: the explicit route table, templates, sign-in and sign-out.

The pages themselves are in ``console.pages``; every one of them is wrapped by
``Guard.page`` (session, CSRF, role).
"""

from __future__ import annotations

import secrets
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from scimgate.app import admins
from scimgate.app.console_views import StoreHandle as Database
from scimgate.audit import log as audit
from scimgate.config import Settings
from scimgate.console.guard import (
    BASE,
    COOKIE,
    SECURITY_HEADERS,
    SIGN_IN_COOKIE,
    FormError,
    Guard,
    client_of,
    read_form,
    refusal,
    safe_next,
    same_origin,
    set_cookie,
)

STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


class Console:
    """One console over one instance's database and settings."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.guard = Guard(settings, db)
        self.throttle = admins.SignInThrottle()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("scimgate.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        static = resources.files("scimgate.console") / "static"
        self.static = {
            p.name: p.read_bytes() for p in static.iterdir() if Path(p.name).suffix in STATIC_TYPES
        }

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(base=BASE, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    # --- public routes ---------------------------------------------------------------------

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self.static.get(name)
        if body is None:
            return PlainTextResponse("not found", status_code=404, headers=SECURITY_HEADERS)
        headers = {**SECURITY_HEADERS, "cache-control": "max-age=300"}
        return Response(body, media_type=STATIC_TYPES[Path(name).suffix], headers=headers)

    async def root(self, request: Request) -> Response:
        return RedirectResponse(f"{BASE}/", status_code=303, headers=SECURITY_HEADERS)

    async def sign_in_form(self, request: Request, error: str = "", status: int = 200) -> Response:
        token = secrets.token_urlsafe(24)
        response = self.render(
            "sign_in.html",
            status,
            csrf=token,
            error=error,
            next=safe_next(request.query_params.get("next")),
            session=None,
        )
        set_cookie(response, request, SIGN_IN_COOKIE, token, 600)
        return response

    async def sign_in(self, request: Request) -> Response:
        if not same_origin(request):
            return refusal(request, 403, "cross-origin form refused")
        try:
            form = await read_form(request)
        except FormError as exc:
            return refusal(request, exc.status, str(exc))
        expected = request.cookies.get(SIGN_IN_COOKIE, "")
        if not expected or not secrets.compare_digest(expected, form.get("csrf", "")):
            return refusal(request, 403, "CSRF token missing or wrong: reload the sign-in page")
        name, password = form.get("name", "").strip(), form.get("password", "").strip()
        source = client_of(request) or "unknown"
        wait = self.throttle.blocked(source, name)
        if wait > 0:
            response = await self.sign_in_form(
                request, f"Too many failed sign-ins: try again in {wait:.0f} s.", 429
            )
            response.headers["retry-after"] = str(int(wait) + 1)
            return response
        # No admin actor until the credential holds: a failure is audited with the name
        # tried in its detail, not as that admin's action.
        actor = audit.Actor(client=source, user_agent=request.headers.get("user-agent"))
        done = await run_in_threadpool(
            admins.sign_in, self.db, name, password, actor,
            lifetime=self.settings.console_session_seconds,
        )  # fmt: skip
        if done is None:
            audit_it, skipped = self.throttle.failed(source, name)
            if audit_it:
                await run_in_threadpool(admins.record_failed_sign_in, self.db, name, actor, skipped)
            return await self.sign_in_form(request, "Wrong name or password.", 401)
        response = RedirectResponse(
            safe_next(form.get("next")), status_code=303, headers=SECURITY_HEADERS
        )
        set_cookie(
            response, request, COOKIE, done.secret, int(self.settings.console_session_seconds)
        )
        response.delete_cookie(SIGN_IN_COOKIE, path=BASE)
        return response


def build_console_app(console: Console) -> Starlette:
    from scimgate.console.pages import Pages

    pages = Pages(console)
    page = console.guard.page
    routes = [
        Route(BASE, console.root, methods=["GET"]),
        Route(f"{BASE}/static/{{name}}", console.static_file, methods=["GET"]),
        Route(f"{BASE}/sign-in", console.sign_in_form, methods=["GET"]),
        Route(f"{BASE}/sign-in", console.sign_in, methods=["POST"]),
        Route(f"{BASE}/sign-out", page(pages.sign_out), methods=["POST"]),
        Route(f"{BASE}/", page(pages.overview), methods=["GET"]),
        Route(f"{BASE}/people", page(pages.people), methods=["GET"]),
        Route(f"{BASE}/people/{{id}}", page(pages.person), methods=["GET"]),
        Route(f"{BASE}/people/{{id}}/live.json", page(pages.person_live), methods=["GET"]),
        Route(f"{BASE}/agents/{{id}}", page(pages.agent), methods=["GET"]),
        Route(f"{BASE}/agents/{{id}}/live.json", page(pages.agent_live), methods=["GET"]),
        Route(f"{BASE}/groups", page(pages.groups), methods=["GET"]),
        Route(f"{BASE}/groups/{{id}}", page(pages.group), methods=["GET"]),
        Route(f"{BASE}/access", page(pages.access), methods=["GET"]),
        Route(f"{BASE}/access/export.csv", page(pages.access_csv), methods=["GET"]),
        Route(f"{BASE}/audit", page(pages.audit), methods=["GET"]),
        Route(f"{BASE}/audit/verify", page(pages.audit_verify), methods=["POST"]),
        Route(f"{BASE}/audit/export.csv", page(pages.audit_csv), methods=["GET"]),
        Route(f"{BASE}/tokens", page(pages.tokens), methods=["GET"]),
        Route(
            f"{BASE}/tokens/{{name}}/rotate",
            page(pages.token_rotate, operator=True),
            methods=["POST"],
        ),
        Route(
            f"{BASE}/tokens/{{name}}/revoke",
            page(pages.token_revoke, operator=True),
            methods=["POST"],
        ),
        Route(f"{BASE}/policy", page(pages.policy), methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return refusal(request, 404, "no such console page")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return refusal(request, 405, f"{request.method} is not allowed here")

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
