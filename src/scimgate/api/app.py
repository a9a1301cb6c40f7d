"""The ASGI application and its explicit route table."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scimgate.api import http
from scimgate.api.auth_failures import Attempt, AuthFailed, FailedAuthentication
from scimgate.api.auth_guard import AuthGuard
from scimgate.app import tokens
from scimgate.app.bulk import run_bulk
from scimgate.app.service import ScimService, WriteResult, is_user_name_lookup
from scimgate.audit import log as audit
from scimgate.config import Settings
from scimgate.metrics import Metrics
from scimgate.scim import discovery, errors, text
from scimgate.scim.resource import project
from scimgate.scim.schema import RESOURCE_TYPES, SEARCH_REQUEST_SCHEMA

log = logging.getLogger("scimgate.api")

# Request paths in log lines: bounded, control characters escaped.
_LOGGED_PATH_CHARS = 256


class SyncWaiter(Protocol):
    """The sync engine, as the API sees it (read-your-writes and readiness)."""

    async def wait_confirmed(self, seq: int, timeout: float) -> bool: ...

    def ready(self) -> tuple[bool, dict[str, Any]]: ...


def _bearer(request: Request) -> str:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


@dataclass
class Api:
    settings: Settings
    service: ScimService
    metrics: Metrics
    sync: SyncWaiter | None = None
    token_cache: tokens.TokenCache = field(default_factory=tokens.TokenCache)
    # The request work's threads (a plain executor: ~30 % less CPU per hop than anyio's).
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(40, thread_name_prefix="scimgate-api")
    )
    auth_guard: AuthGuard | None = None
    failed_auth: FailedAuthentication = field(init=False, repr=False)

    def __post_init__(self) -> None:
        guard = self.auth_guard or AuthGuard(
            self.settings.auth_failure_window_seconds, self.settings.auth_failure_limit
        )
        self.failed_auth = FailedAuthentication(
            guard, self.service.db, self.metrics, self.token_cache, self.executor
        )

    @property
    def db(self) -> Any:
        return self.service.db

    # --- the request pipeline: auth + work in one thread hop, errors as SCIM bodies ------

    def _actor(self, request: Request, token_name: str | None) -> audit.Actor:
        client = request.client.host if request.client else None
        return audit.Actor(
            token=token_name,
            client=client,
            user_agent=request.headers.get("user-agent"),
            request_id=request.state.request_id,
        )

    def _authenticate(self, request: Request) -> audit.Actor:
        secret = _bearer(request)
        with self.db.read() as conn:
            verdict = self.token_cache.authenticate(conn, secret)
        actor = self._actor(request, verdict.name)
        if verdict.reason != "ok":
            # No write here: an unauthenticated request never writes to the database. The
            # failure is aggregated per source and window and audited by a flush (call()).
            self.metrics.auth_failures.labels(verdict.reason).inc()
            raise AuthFailed(
                "missing bearer token"
                if verdict.reason == "missing"
                else f"bearer token is {verdict.reason if verdict.reason != 'unknown' else 'not valid'}",
                kind="token.expired_use" if verdict.reason == "expired" else "auth.failed",
                reason=verdict.reason,
                token=verdict.name,
            )
        assert verdict.name is not None
        tokens.touch(self.db, verdict.name, verdict.last_used, self.token_cache)
        return actor

    def _work_if_token_holds(
        self,
        request: Request,
        work: Callable[[audit.Actor, Any], Response | WriteResultResponse],
        body: Any,
    ) -> Response | WriteResultResponse | None:
        """The work, when the cached token row is valid and the database agrees, checked in
        the work's first transaction (no transaction of its own). None: take the full path
        (cache miss, a last_used write due, or the token changed: it decides and audits)."""
        secret = _bearer(request)
        verdict = self.token_cache.lookup(secret)
        if verdict is None or verdict.reason != "ok" or tokens.touch_due(verdict.last_used):
            return None

        def check(conn: Any) -> None:
            if self.token_cache.authenticate(conn, secret).reason != "ok":
                raise tokens.TokenChanged

        try:
            with self.db.checked(check) as checked:
                try:
                    return work(self._actor(request, verdict.name), body)
                finally:
                    if not checked.ran():
                        # No transaction (discovery documents, or a request refused before
                        # one): check in one of its own, before any answer leaves.
                        with self.db.read():
                            pass
        except tokens.TokenChanged:
            return None

    def _recently_valid(self, request: Request) -> bool:
        """The bearer token's cached row (at most TokenCache.ttl old) says it is valid."""
        verdict = self.token_cache.lookup(_bearer(request))
        return verdict is not None and verdict.reason == "ok"

    async def call(
        self,
        request: Request,
        endpoint: str,
        work: Callable[[audit.Actor, Any], Response | WriteResultResponse],
        *,
        body_limit: int | None = None,
        inline: bool = False,
        check_text: bool = True,
    ) -> Response:
        """Authenticate, then read the body (an unauthenticated client never gets its body
        parsed), then run the work in the thread pool; every outcome is counted and logged."""
        started = time.perf_counter()
        request.state.request_id = http.request_id(request)
        status = 500
        try:
            self.failed_auth.refuse_if_throttled(
                self._actor(request, None).client, lambda: self._attempt(request)
            )
            out: Response | WriteResultResponse | None = None
            if inline and self.db.inline_reads:
                # A short read (one indexed lookup) on the loop itself: a thread hop costs
                # more CPU (~0.1 ms) than the read. Only with a cached token row.
                with self.db.inline():
                    out = self._work_if_token_holds(request, work, None)
            if out is None:
                out = await self._in_thread(request, work, body_limit, check_text)
            if isinstance(out, WriteResultResponse):
                await self._read_your_writes(out.result, request.state.request_id)
                out = out.response
            response = out
        except errors.ScimError as exc:
            if isinstance(exc, AuthFailed):
                exc = self.failed_auth.failed(self._attempt(request), exc)
            response = http.error_response(exc)
        except Exception:  # never a stack trace to the client
            log.exception("internal error", extra={"request_id": request.state.request_id})
            response = http.error_response(errors.ScimError("internal error", status=500))
        status = response.status_code
        response.headers["X-Request-ID"] = request.state.request_id
        elapsed = time.perf_counter() - started
        self.metrics.observe_request(endpoint, request.method, status, elapsed)
        log.info(
            "scim request",
            extra={
                "request_id": request.state.request_id,
                "method": request.method,
                "path": text.echo(request.url.path, _LOGGED_PATH_CHARS),
                "status": status,
                "ms": round(elapsed * 1000, 2),
            },
        )
        return response

    def _attempt(self, request: Request) -> Attempt:
        return Attempt(
            self._actor(request, None).client, _bearer(request), request.url.path,
            request.headers.get("user-agent"), request.state.request_id,
        )  # fmt: skip

    def close(self) -> None:
        """Shutdown (the server has stopped): finish the request threads, then audit the
        failed authentications still pending, the current window included."""
        self.executor.shutdown(wait=True)
        self.failed_auth.close()

    async def _in_thread(
        self,
        request: Request,
        work: Callable[[audit.Actor, Any], Response | WriteResultResponse],
        body_limit: int | None,
        check_text: bool = True,
    ) -> Response | WriteResultResponse:
        loop = asyncio.get_running_loop()
        body = None
        if body_limit is not None and self._recently_valid(request):
            # The token row was valid moments ago (TokenCache): read the body without a
            # thread hop of its own; the token is checked again, against the database, in
            # the same hop as the work below.
            body = await http.read_json(request, body_limit, check_text=check_text)
        elif body_limit is not None:
            await loop.run_in_executor(self.executor, self._authenticate, request)
            body = await http.read_json(request, body_limit, check_text=check_text)

        def run() -> Response | WriteResultResponse:
            # Authenticate and work in one thread hop. A revoked or expired token stops here,
            # whatever the cache says: the work's own (first) transaction checks the token
            # row before anything else; the full path reads it on its own.
            out = self._work_if_token_holds(request, work, body)
            return work(self._authenticate(request), body) if out is None else out

        return await loop.run_in_executor(self.executor, run)

    async def _read_your_writes(self, result: WriteResult, request_id: str) -> None:
        if not (self.settings.read_your_writes and self.sync and result.changes):
            return
        try:
            ok = await self.sync.wait_confirmed(
                result.last_seq, self.settings.read_your_writes_timeout
            )
        except Exception:
            # The write is committed: its answer must not become a 500 (a client would
            # retry a write that took effect). The change log still carries it to HAProxy.
            log.exception("read-your-writes wait failed", extra={"request_id": request_id})
            ok = False
        if not ok:
            self.metrics.ryw_timeouts.inc()
            log.warning(
                "read-your-writes timeout: change not yet confirmed by every target",
                extra={
                    "request_id": request_id,
                    "seq": result.last_seq,
                    "timeout_s": self.settings.read_your_writes_timeout,
                },
            )


@dataclass
class WriteResultResponse:
    """A response that may wait for HAProxy confirmation (read-your-writes) before leaving."""

    response: Response
    result: WriteResult


def _wants_members(attrs: list[str] | None, excluded: list[str] | None) -> bool:
    if excluded and any(
        a.lower().endswith("members") or a.lower().startswith("members") for a in excluded
    ):
        return False
    if attrs is not None:
        return any(a.lower().split(":")[-1].startswith("members") for a in attrs)
    return True


def build_app(api: Api) -> Starlette:
    s = api.settings

    def rtype_of(request: Request) -> str:
        return str(request.scope["route_rtype"])

    def list_or_search(
        request: Request,
        rtype: str,
        params: dict[str, Any],
        attrs: list[str] | None,
        excluded: list[str] | None,
    ) -> Response:
        # RFC 7644 §3.4.2: every parameter type-checked, whether from a query or a body.
        start = http.int_param(params.get("startindex"), "startIndex", 1)
        count = http.int_param(params.get("count"), "count", s.default_count)
        count = max(0, min(count, s.max_results))
        sort_order = http.str_param(params.get("sortorder"), "sortOrder")
        if sort_order and sort_order.lower() not in ("ascending", "descending"):
            raise errors.InvalidValue("sortOrder must be ascending or descending")
        filt = http.str_param(params.get("filter"), "filter")
        sort_by = http.str_param(params.get("sortby"), "sortBy")
        base = http.base_url(request)
        rtypes = [rtype] if rtype != "*" else list(RESOURCE_TYPES)
        total = 0
        found: list[dict[str, Any]] = []
        offset = max(start, 1) - 1
        for name in rtypes:
            # Root search (RFC 7644 §3.4.3) pages across the resource types in turn.
            n, page = api.service.search(
                name,
                base,
                filter_text=filt,
                sort_by=sort_by,
                sort_order=sort_order,
                start_index=max(offset - total, 0) + 1,
                count=max(count - len(found), 0),
                include_members=_wants_members(attrs, excluded),
            )
            total += n
            found.extend(project(r, RESOURCE_TYPES[name], attrs, excluded) for r in page)
        return http.scim_response(
            discovery.list_response(found, total=total, start_index=max(start, 1))
        )

    async def list_resources(request: Request) -> Response:
        rtype = rtype_of(request)

        def work(actor: audit.Actor, _body: Any) -> Response:
            # Parameters are checked inside the work: after authentication, as SCIM errors.
            q = http.query(request)
            return list_or_search(request, rtype, q, *http.projection(q))

        given = {k.lower(): v for k, v in request.query_params.items()}  # unchecked: a hint
        return await api.call(
            request,
            f"/{rtype}s",
            work,
            inline=rtype == "User"
            and is_user_name_lookup(given.get("filter"), given.get("sortby")),
        )

    async def search(request: Request) -> Response:
        rtype = request.scope.get("route_rtype", "*")

        def work(actor: audit.Actor, body: Any) -> Response:
            if not isinstance(body, dict):
                raise errors.InvalidSyntax("a SearchRequest must be a JSON object")
            schemas = body.get("schemas")
            if schemas is not None and SEARCH_REQUEST_SCHEMA not in (
                schemas if isinstance(schemas, list) else []
            ):
                raise errors.InvalidSyntax(f"schemas must contain {SEARCH_REQUEST_SCHEMA}")
            params = {k.lower(): v for k, v in body.items()}
            return list_or_search(request, rtype, params, *http.projection(params))

        return await api.call(request, "/.search", work, body_limit=s.max_body_bytes)

    async def create(request: Request) -> Response:
        rtype = rtype_of(request)

        def work(actor: audit.Actor, body: Any) -> WriteResultResponse:
            attrs, excluded = http.projection(http.query(request))
            result = api.service.create(rtype, body, actor, http.base_url(request))
            assert result.resource is not None
            res = result.resource
            api.metrics.writes.labels(rtype, "create").inc()
            return WriteResultResponse(
                http.scim_response(
                    project(res, RESOURCE_TYPES[rtype], attrs, excluded),
                    201,
                    {"Location": res["meta"]["location"], "ETag": res["meta"]["version"]},
                ),
                result,
            )

        return await api.call(request, f"/{rtype}s", work, body_limit=s.max_body_bytes)

    async def get_one(request: Request) -> Response:
        rtype = rtype_of(request)
        rid = request.path_params["id"]
        if_none_match = request.headers.get("if-none-match")

        def work(actor: audit.Actor, _body: Any) -> Response:
            attrs, excluded = http.projection(http.query(request))
            res = api.service.get(
                rtype, rid, http.base_url(request), include_members=_wants_members(attrs, excluded)
            )
            tag = res["meta"]["version"]
            if if_none_match and (
                if_none_match.strip() == "*" or tag in [t.strip() for t in if_none_match.split(",")]
            ):
                return Response(status_code=304, headers={"ETag": tag})
            return http.scim_response(
                project(res, RESOURCE_TYPES[rtype], attrs, excluded), 200, {"ETag": tag}
            )

        # One user is one indexed read; a group may have a million members.
        return await api.call(request, f"/{rtype}s/{{id}}", work, inline=rtype == "User")

    async def write_one(request: Request) -> Response:
        rtype = rtype_of(request)
        rid = request.path_params["id"]
        method = request.method
        if_match = request.headers.get("if-match")

        def work(actor: audit.Actor, body: Any) -> WriteResultResponse:
            attrs, excluded = http.projection(http.query(request))
            base = http.base_url(request)
            rt = RESOURCE_TYPES[rtype]
            if method == "DELETE":
                result = api.service.delete(rtype, rid, actor, base, if_match)
                api.metrics.writes.labels(rtype, "delete").inc()
                return WriteResultResponse(Response(status_code=204), result)
            if method == "PUT":
                result = api.service.replace(rtype, rid, body, actor, base, if_match)
                api.metrics.writes.labels(rtype, "replace").inc()
            else:
                want_members = (
                    rtype == "Group" and attrs is not None and _wants_members(attrs, excluded)
                )
                result = api.service.patch(
                    rtype, rid, body, actor, base, if_match, want_members=want_members
                )
                api.metrics.writes.labels(rtype, "patch").inc()
                if rtype == "Group" and attrs is None:
                    # Group PATCH answers 204 (RFC 7644 §3.5.2): returning every member of a
                    # large group after a one-member change is what makes peers O(n).
                    res = result.resource or {}
                    return WriteResultResponse(
                        Response(
                            status_code=204,
                            headers={"ETag": res.get("meta", {}).get("version", "")},
                        ),
                        result,
                    )
            res = result.resource or {}
            return WriteResultResponse(
                http.scim_response(
                    project(res, rt, attrs, excluded), 200, {"ETag": res["meta"]["version"]}
                ),
                result,
            )

        limit = s.max_body_bytes if method in ("PUT", "PATCH") else None
        return await api.call(request, f"/{rtype}s/{{id}}", work, body_limit=limit)

    async def bulk(request: Request) -> Response:
        def work(actor: audit.Actor, body: Any) -> WriteResultResponse:
            response, results = run_bulk(
                api.service,
                body,
                actor,
                http.base_url(request),
                max_operations=s.bulk_max_operations,
            )
            merged = WriteResult(None, [c for r in results for c in r.changes])
            return WriteResultResponse(http.scim_response(response, 200), merged)

        # Over maxPayloadSize: 413 (RFC 7644 §3.7.4), from the body reader. Text is checked
        # per operation (run_bulk), so that one bad operation fails alone (§3.7.3).
        return await api.call(
            request, "/Bulk", work, body_limit=s.bulk_max_payload_bytes, check_text=False
        )

    async def spc(request: Request) -> Response:
        return await api.call(
            request,
            "/ServiceProviderConfig",
            lambda actor, _body: http.scim_response(
                discovery.service_provider_config(
                    http.base_url(request),
                    max_operations=s.bulk_max_operations,
                    max_payload=s.bulk_max_payload_bytes,
                    max_results=s.max_results,
                )
            ),
        )

    async def resource_types(request: Request) -> Response:
        rid = request.path_params.get("id")

        def work(actor: audit.Actor, _body: Any) -> Response:
            base = http.base_url(request)
            if rid is None:
                return http.scim_response(
                    discovery.list_response(discovery.all_resource_types(base))
                )
            if rid not in RESOURCE_TYPES:
                raise errors.NotFound(f"ResourceType {rid} not found")
            return http.scim_response(discovery.resource_type(rid, base))

        return await api.call(request, "/ResourceTypes", work)

    async def schemas(request: Request) -> Response:
        rid = request.path_params.get("id")

        def work(actor: audit.Actor, _body: Any) -> Response:
            base = http.base_url(request)
            if rid is None:
                return http.scim_response(discovery.list_response(discovery.all_schemas(base)))
            doc = discovery.schema(rid, base)
            if doc is None:
                raise errors.NotFound(f"Schema {rid} not found")
            return http.scim_response(doc)

        return await api.call(request, "/Schemas", work)

    async def me(request: Request) -> Response:
        def work(actor: audit.Actor, _body: Any) -> Response:
            raise errors.NotImplementedScim(
                "/Me is not supported: SCIM clients here are IdPs, not end users"
            )

        return await api.call(request, "/Me", work)

    async def not_allowed(request: Request) -> Response:
        return http.error_response(
            errors.MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        def check() -> tuple[bool, dict[str, Any]]:
            detail: dict[str, Any] = {}
            try:
                with api.db.read() as conn:
                    conn.exec_driver_sql("SELECT 1")
                detail["database"] = "ok"
                ok = True
            except Exception:
                detail["database"] = "unreachable"
                ok = False
            if api.sync is not None:
                sync_ok, sync_detail = api.sync.ready()
                detail["targets"] = sync_detail
                ok = ok and sync_ok
            return ok, detail

        ok, detail = await run_in_threadpool(check)
        return JSONResponse(
            {"status": "ready" if ok else "unready", **detail}, status_code=200 if ok else 503
        )

    async def metrics(request: Request) -> Response:
        body, ctype = await run_in_threadpool(api.metrics.render)
        return Response(body, media_type=ctype)

    def scim_routes(rtype: str, plural: str) -> list[Route]:
        def tagged(
            endpoint: Callable[[Request], Awaitable[Response]],
        ) -> Callable[[Request], Awaitable[Response]]:
            async def wrapper(request: Request) -> Response:
                request.scope["route_rtype"] = rtype
                return await endpoint(request)

            return wrapper

        base = f"/scim/v2/{plural}"
        return [
            Route(base, tagged(list_resources), methods=["GET"]),
            Route(base, tagged(create), methods=["POST"]),
            Route(base, not_allowed, methods=["PUT", "PATCH", "DELETE"]),
            Route(base + "/.search", tagged(search), methods=["POST"]),
            Route(base + "/{id}", tagged(get_one), methods=["GET"]),
            Route(base + "/{id}", tagged(write_one), methods=["PUT", "PATCH", "DELETE"]),
            Route(base + "/{id}", not_allowed, methods=["POST"]),
        ]

    routes = [
        *scim_routes("User", "Users"),
        *scim_routes("Group", "Groups"),
        Route("/scim/v2/.search", search, methods=["POST"]),
        Route("/scim/v2/Bulk", bulk, methods=["POST"]),
        Route("/scim/v2/ServiceProviderConfig", spc, methods=["GET"]),
        Route("/scim/v2/ResourceTypes", resource_types, methods=["GET"]),
        Route("/scim/v2/ResourceTypes/{id}", resource_types, methods=["GET"]),
        Route("/scim/v2/Schemas", schemas, methods=["GET"]),
        Route("/scim/v2/Schemas/{id:path}", schemas, methods=["GET"]),
        Route("/scim/v2/Me", me, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

    async def on_404(request: Request, exc: Exception) -> Response:
        return http.error_response(errors.NotFound(f"no such endpoint: {request.url.path}"))

    async def on_405(request: Request, exc: Exception) -> Response:
        return http.error_response(
            errors.MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        )

    app = Starlette(routes=routes, exception_handlers={404: on_404, 405: on_405})
    app.state.api = api
    return app
