"""Who may see or do what in the console: the session cookie, CSRF on every form, roles.

Every route but sign-in and the static files goes through :func:`Guard.page`: no session →
a GET of a page is redirected to sign-in (303), anything else (a JSON poll, a POST) gets
401; a POST must carry the session's CSRF token (and, when the browser sends ``Origin``,
come from the console's own origin); an operator route refuses a viewer (403).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from scimgate.app import admins
from scimgate.app.console_views import StoreHandle as Database
from scimgate.audit import log as audit
from scimgate.config import Settings

COOKIE = "scimgate_console"
SIGN_IN_COOKIE = "scimgate_console_signin"  # the sign-in form's double-submit token
MAX_FORM_BYTES = 65_536
BASE = "/console"

SECURITY_HEADERS = {
    # Scripts and styles from the console's own files only: no inline script can run.
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on our
    # own form posts, and same_origin() would refuse them.
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class FormError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@dataclass
class Ctx:
    """A signed-in request: the session, its CSRF token, the parsed form (POST) and the
    audit actor (``admin:NAME``, the client address, its user agent)."""

    session: admins.Session
    csrf: str
    actor: audit.Actor
    form: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, Ctx], Awaitable[Response]]


def is_tls(request: Request) -> bool:
    """Served over TLS: directly, or behind a trusted proxy that said so (``forwarded``)."""
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=BASE, httponly=True, samesite="strict",
        secure=is_tls(request),
    )  # fmt: skip


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind the console's forms
    send), at most MAX_FORM_BYTES; the first value of each field."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/x-www-form-urlencoded", ""):  # "": a POST with no body
        raise FormError(415, "forms are application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError(413, "form too large")
    parsed = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def same_origin(request: Request) -> bool:
    """No ``Origin`` (old browsers, curl) or the console's own; SameSite=Strict and the
    CSRF token are the main defence, this one is cheap."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin == own


def client_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def refusal(request: Request, status: int, text: str) -> Response:
    if request.url.path.endswith(".json"):
        return JSONResponse({"error": text}, status_code=status, headers=SECURITY_HEADERS)
    return PlainTextResponse(text, status_code=status, headers=SECURITY_HEADERS)


class Guard:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    async def session_of(self, request: Request) -> tuple[admins.Session | None, str]:
        secret = request.cookies.get(COOKIE, "")
        session = await run_in_threadpool(
            admins.session_for, self.db, secret, idle=self.settings.console_idle_seconds
        )
        return session, secret

    def page(
        self, handler: Handler, *, operator: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session, secret = await self.session_of(request)
            if session is None:
                if request.method == "GET" and not request.url.path.endswith((".json", ".csv")):
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    return RedirectResponse(
                        f"{BASE}/sign-in?next={urllib.parse.quote(target, safe='')}",
                        status_code=303, headers=SECURITY_HEADERS,
                    )  # fmt: skip
                return refusal(request, 401, "sign in first")
            ctx = Ctx(
                session,
                admins.csrf_token(secret),
                admins.admin_actor(
                    session.admin, client_of(request), request.headers.get("user-agent")
                ),
            )
            if request.method == "POST":
                if not same_origin(request):
                    return refusal(request, 403, "cross-origin form refused")
                try:
                    ctx.form = await read_form(request)
                except FormError as exc:
                    return refusal(request, exc.status, str(exc))
                if not admins.csrf_ok(secret, ctx.form.get("csrf")):
                    return refusal(request, 403, "CSRF token missing or wrong: reload the page")
            if operator and not session.is_operator:
                return refusal(request, 403, f"{session.admin} is a viewer: this needs an operator")
            return await handler(request, ctx)

        return endpoint


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a console path only (never another site)."""
    if value and value.startswith(BASE + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return BASE + "/"
