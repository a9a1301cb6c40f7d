"""Access review (pure): for every route, who can reach it and through which group."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass

from scimgate.audit.replay import DirectoryState
from scimgate.policy.model import ANY_GROUP, Policy


@dataclass(frozen=True)
class AccessRow:
    route: str
    path_prefix: str
    user_id: str
    user_name: str
    via: str  # "any active user" or "IdP group → policy group"
    requires_scopes: str


def access_rows(state: DirectoryState, policy: Policy) -> list[AccessRow]:
    rows: list[AccessRow] = []
    for route in policy.routes:
        scopes = " ".join(route.require_scopes)
        for uid, user in sorted(state.users.items(), key=lambda kv: kv[1].user_name.lower()):
            if not user.active:
                continue
            via: list[str] = []
            if ANY_GROUP in route.allow_groups:
                via.append("any active user")
            for group in state.groups_of(uid):
                for slug in route.allow_groups:
                    pg = policy.groups.get(slug)
                    if pg and (
                        group.display_name in pg.idp_groups or group.external_id in pg.idp_groups
                    ):
                        via.append(f"{group.display_name} → {slug}")
            if via:
                rows.append(
                    AccessRow(
                        route.name,
                        route.from_.path_prefix,
                        uid,
                        user.user_name,
                        "; ".join(sorted(set(via))),
                        scopes,
                    )
                )
    return rows


def render(rows: list[AccessRow], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2, ensure_ascii=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["route", "path_prefix", "user_id", "user_name", "via", "requires_scopes"])
        for r in rows:
            writer.writerow(
                [r.route, r.path_prefix, r.user_id, r.user_name, r.via, r.requires_scopes]
            )
        return buf.getvalue()
    lines = ["| route | path | user | via | scopes |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.route} | `{r.path_prefix}` | {r.user_name} | {r.via} | {r.requires_scopes or '-'} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
