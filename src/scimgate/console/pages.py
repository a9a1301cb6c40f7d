"""The console's pages: each one reads through a use case (in a worker thread) and renders
a template. Actions (sign-out, verify, token rotation and revocation, exports) are audited
with the admin's name by the use case they call."""

from __future__ import annotations

import os
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from scimgate.app import admins, console_agents, console_views as views, reports, tokens
from scimgate.console.app import Console
from scimgate.console.chart import latency_chart
from scimgate.console.guard import BASE, COOKIE, SECURITY_HEADERS, Ctx, refusal
from scimgate.policy.model import Policy

AUDIT_FILTERS = ("kind", "actor", "resource_id", "since", "until")


def _age(ts: str | None) -> str:
    """``3 d``, ``5 h``, ``12 min``, ``40 s`` since an ISO timestamp."""
    if not ts:
        return "-"
    try:
        then = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return ts
    s = (datetime.now(UTC) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size:.0f} {unit}"
    return f"{max(s, 0):.0f} s"


def _timestamp(text: str) -> str:
    """A form's date-time (``2026-12-03T14:05`` from <input type=datetime-local>, or a full
    ISO timestamp) as the trail's fixed-width UTC text; "" when empty or unparseable."""
    text = text.strip().rstrip("Z")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            continue
    return ""


class Pages:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.db = console.db
        self.settings = console.settings
        self._policy: tuple[float, Policy | None] | None = None
        self.c.templates.globals["age"] = _age

    def active_policy(self) -> Policy | None:
        """The active policy, read again when its file changes."""
        path = self.settings.policy_file
        mtime = os.stat(path).st_mtime if path is not None and path.exists() else 0.0
        if self._policy is None or self._policy[0] != mtime:
            self._policy = (mtime, views.load_active_policy(self.settings))
        return self._policy[1]

    def page(self, name: str, ctx: Ctx, **context: Any) -> Response:
        return self.c.render(name, session=ctx.session, csrf=ctx.csrf, **context)

    # --- session ---------------------------------------------------------------------------

    async def sign_out(self, request: Request, ctx: Ctx) -> Response:
        await run_in_threadpool(admins.sign_out, self.db, ctx.session, ctx.actor)
        response = RedirectResponse(f"{BASE}/sign-in", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path=BASE)
        return response

    # --- overview --------------------------------------------------------------------------

    async def overview(self, request: Request, ctx: Ctx) -> Response:
        targets = await run_in_threadpool(views.overview, self.db, self.settings)
        charts = {t.name: latency_chart(t.latency) for t in targets}
        counts = await run_in_threadpool(views.people_counts, self.db)
        return self.page(
            "overview.html", ctx, targets=targets, charts=charts, counts=counts,
            alert_seconds=self.settings.deprovision_alert_seconds,
        )  # fmt: skip

    # --- people ----------------------------------------------------------------------------

    async def people(self, request: Request, ctx: Ctx) -> Response:
        q = request.query_params.get("q", "")[:256]
        after = request.query_params.get("after", "")[:256]
        agents_after = request.query_params.get("agents_after", "")[:64]
        rows, counts = await run_in_threadpool(views.people, self.db, q, after)
        agents, agent_counts = await run_in_threadpool(
            console_agents.agents, self.db, q, agents_after
        )
        return self.page(
            "people.html", ctx, q=q, rows=rows, counts=counts,
            next_after=rows[-1].user_name if len(rows) == views.PAGE else "",
            agents=agents, agent_counts=agent_counts,
            agents_next=agents[-1].row.id if len(agents) == views.PAGE else "",
        )  # fmt: skip

    async def agent(self, request: Request, ctx: Ctx) -> Response:
        view = await run_in_threadpool(
            console_agents.agent_view, self.db, self.active_policy(), request.path_params["id"]
        )
        if view is None:
            return refusal(request, 404, "no such agent")
        return self.page("agent.html", ctx, view=view)

    async def agent_live(self, request: Request, ctx: Ctx) -> Response:
        """The agent page's data as JSON, polled like the person page's (``person_live``)."""
        head = await run_in_threadpool(views.trail_head, self.db)
        if request.query_params.get("head") == str(head):
            return JSONResponse({"head": head, "unchanged": True}, headers=SECURITY_HEADERS)
        view = await run_in_threadpool(
            console_agents.agent_view, self.db, self.active_policy(), request.path_params["id"]
        )
        if view is None:
            return refusal(request, 404, "no such agent")
        return JSONResponse(
            {
                "head": head,
                "active": view.state == "active",
                "state": view.state,
                "name": view.agent.name,
                "owners": [asdict(o) for o in view.owners],
                "groups": [name for _, name, _ in view.groups],
                "map_entries": view.map_entries,
                "grants": [asdict(g) for g in view.grants],
                "story": view.story,
            },
            headers=SECURITY_HEADERS,
        )

    async def person(self, request: Request, ctx: Ctx) -> Response:
        view = await run_in_threadpool(
            views.person_view, self.db, self.active_policy(), request.path_params["id"]
        )
        if view is None:
            return refusal(request, 404, "no such person")
        return self.page("person.html", ctx, view=view)

    async def person_live(self, request: Request, ctx: Ctx) -> Response:
        """What the person page shows, as JSON: the page polls it (console.js) and redraws
        access and story when they change, without a reload. A poll that names the trail's
        head it last saw (``?head=N``) gets ``{"unchanged": true}`` while the head has not
        moved: an idle page costs one indexed read, not a walk of the person's story."""
        head = await run_in_threadpool(views.trail_head, self.db)
        if request.query_params.get("head") == str(head):
            return JSONResponse({"head": head, "unchanged": True}, headers=SECURITY_HEADERS)
        view = await run_in_threadpool(
            views.person_view, self.db, self.active_policy(), request.path_params["id"]
        )
        if view is None:
            return refusal(request, 404, "no such person")
        return JSONResponse(
            {
                "head": head,
                "active": view.person.active,
                "user_name": view.person.user_name,
                "groups": [name for _, name, _ in view.groups],
                "map_entries": view.map_entries,
                "grants": [asdict(g) for g in view.grants],
                "story": view.story,
            },
            headers=SECURITY_HEADERS,
        )

    # --- groups ----------------------------------------------------------------------------

    async def groups(self, request: Request, ctx: Ctx) -> Response:
        q = request.query_params.get("q", "")[:256]
        after = request.query_params.get("after", "")[:256]
        rows = await run_in_threadpool(views.groups, self.db, q, after)
        policy = self.active_policy()
        fed = {
            g.id: views.policy_groups_fed_by(policy, g.display_name, g.external_id) for g in rows
        }
        return self.page(
            "groups.html", ctx, q=q, rows=rows, fed=fed,
            next_after=rows[-1].display_name if len(rows) == views.PAGE else "",
        )  # fmt: skip

    async def group(self, request: Request, ctx: Ctx) -> Response:
        after = request.query_params.get("after", "")[:256]
        view = await run_in_threadpool(
            views.group_view, self.db, self.active_policy(), request.path_params["id"], after
        )
        if view is None:
            return refusal(request, 404, "no such group")
        return self.page("group.html", ctx, view=view, next_after=view.next_after)

    # --- access review ---------------------------------------------------------------------

    def _access_query(self, request: Request) -> tuple[str, str]:
        return request.query_params.get("route", "")[:128], _timestamp(
            request.query_params.get("at", "")[:64]
        )

    async def access(self, request: Request, ctx: Ctx) -> Response:
        policy = self.active_policy()
        if policy is None:
            return self.page("access.html", ctx, matrix=None, rows=[], route="", at="", asked=False)
        route, at = self._access_query(request)
        asked = "route" in request.query_params
        rows = (
            await run_in_threadpool(views.who_could_reach, self.db, policy, route, at or None)
            if asked
            else []
        )
        return self.page(
            "access.html", ctx, matrix=views.access_matrix(policy), rows=rows, route=route,
            at=at, asked=asked,
        )  # fmt: skip

    async def access_csv(self, request: Request, ctx: Ctx) -> Response:
        policy = self.active_policy()
        if policy is None:
            return refusal(request, 404, "no policy")
        route, at = self._access_query(request)
        rows = await run_in_threadpool(views.who_could_reach, self.db, policy, route, at or None)
        await run_in_threadpool(
            views.record_console_action, self.db, ctx.actor, "console.exported",
            {"what": "access", "route": route or "*", "at": at or "now", "rows": len(rows)},
        )  # fmt: skip
        name = f"access-{route or 'all'}-{(at or 'now')[:19].replace(':', '')}.csv"
        return Response(
            views.access_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={**SECURITY_HEADERS, "content-disposition": f'attachment; filename="{name}"'},
        )

    # --- audit -----------------------------------------------------------------------------

    def _audit_filters(self, request: Request) -> dict[str, str]:
        out = {k: request.query_params.get(k, "").strip()[:128] for k in AUDIT_FILTERS}
        out["since"], out["until"] = _timestamp(out["since"]), _timestamp(out["until"])
        return out

    async def audit(self, request: Request, ctx: Ctx) -> Response:
        filters = self._audit_filters(request)
        before = request.query_params.get("before", "")
        before_seq = int(before) if before.isdigit() else 0
        rows = await run_in_threadpool(views.events, self.db, filters, before_seq)
        chain = await run_in_threadpool(views.chain_status, self.db)
        return self.page(
            "audit.html", ctx, rows=rows, filters=filters, chain=chain,
            next_before=rows[-1]["seq"] if len(rows) == views.PAGE else "",
        )  # fmt: skip

    async def audit_verify(self, request: Request, ctx: Ctx) -> Response:
        await run_in_threadpool(views.verify_chain_now, self.db, ctx.actor)
        return RedirectResponse(f"{BASE}/audit", status_code=303, headers=SECURITY_HEADERS)

    async def audit_csv(self, request: Request, ctx: Ctx) -> Response:
        filters = self._audit_filters(request)
        since, until = filters["since"] or None, filters["until"] or None
        await run_in_threadpool(
            views.record_console_action, self.db, ctx.actor, "console.exported",
            {"what": "audit", "since": since, "until": until},
        )  # fmt: skip
        return StreamingResponse(
            reports.export_events(self.db, since=since, until=until, fmt="csv"),
            media_type="text/csv; charset=utf-8",
            headers={**SECURITY_HEADERS, "content-disposition": 'attachment; filename="audit.csv"'},
        )

    # --- tokens ----------------------------------------------------------------------------

    async def tokens(self, request: Request, ctx: Ctx) -> Response:
        rows = await run_in_threadpool(tokens.list_tokens, self.db)
        return self.page("tokens.html", ctx, rows=rows, new_secret=None, message="")

    async def token_rotate(self, request: Request, ctx: Ctx) -> Response:
        name = request.path_params["name"]
        try:
            overlap = tokens.parse_duration(ctx.form.get("overlap", "24h") or "24h")
            secret = await run_in_threadpool(
                lambda: tokens.rotate(self.db, name, overlap, actor=ctx.actor)
            )
        except tokens.TokenError as exc:
            rows = await run_in_threadpool(tokens.list_tokens, self.db)
            return self.page("tokens.html", ctx, rows=rows, new_secret=None, message=str(exc))
        rows = await run_in_threadpool(tokens.list_tokens, self.db)
        return self.page(
            "tokens.html", ctx, rows=rows, new_secret=(name, secret),
            message=f"Token {name} rotated: the old secret works for {ctx.form.get('overlap') or '24h'}.",
        )  # fmt: skip

    async def token_revoke(self, request: Request, ctx: Ctx) -> Response:
        name = request.path_params["name"]
        try:
            await run_in_threadpool(lambda: tokens.revoke(self.db, name, actor=ctx.actor))
            message = f"Token {name} revoked."
        except tokens.TokenError as exc:
            message = str(exc)
        rows = await run_in_threadpool(tokens.list_tokens, self.db)
        return self.page("tokens.html", ctx, rows=rows, new_secret=None, message=message)

    # --- policy ----------------------------------------------------------------------------

    async def policy(self, request: Request, ctx: Ctx) -> Response:
        view = await run_in_threadpool(views.policy_view, self.settings)
        return self.page("policy.html", ctx, view=view)
