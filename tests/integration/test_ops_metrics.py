"""Operations endpoints of a real `scimgate serve` (SQLite and PostgreSQL): /metrics parses as
Prometheus text and its counters move by exactly what was done; /healthz and /readyz answer
without auth and say nothing sensitive."""

from __future__ import annotations

import time
import uuid

import httpx
import sqlalchemy as sa
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from scimgate.cli import main as cli_main
from scimgate.store import tables
from tests.fixtures.server import ScimServer
from tests.support.scim import PATCH_SCHEMA as PATCH, USER_SCHEMA as USER

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def root(server: ScimServer) -> str:
    return server.base_url.removesuffix("/scim/v2")


def scrape(server: ScimServer) -> Samples:
    r = httpx.get(root(server) + "/metrics", timeout=30)  # no Authorization header
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_request_write_and_latency_metrics_move_exactly(
    scim_server: ScimServer, scim: httpx.Client
) -> None:
    t = uuid.uuid4().hex[:8]
    before = scrape(scim_server)
    ids = []
    for i in range(3):
        r = scim.post("/Users", json={"schemas": [USER], "userName": f"m{i}-{t}@example.com"})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    r = scim.post("/Users", json={"schemas": [USER], "userName": f"m0-{t}@example.com"})
    assert r.status_code == 409
    for _ in range(2):
        assert (
            scim.get("/Users", params={"filter": f'userName eq "m1-{t}@example.com"'}).status_code
            == 200
        )
    assert scim.get(f"/Users/{ids[0]}").status_code == 200
    assert scim.get(f"/Users/{uuid.uuid4()}").status_code == 404
    r = scim.patch(
        f"/Users/{ids[1]}",
        json={"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]},
    )
    assert r.status_code == 200, r.text
    assert scim.delete(f"/Users/{ids[2]}").status_code == 204
    assert (
        httpx.get(
            scim_server.base_url + "/Users", headers={"Authorization": "Bearer x"}
        ).status_code
        == 401
    )
    after = scrape(scim_server)

    def delta(name: str, **labels: str) -> float:
        return val(after, name, **labels) - val(before, name, **labels)

    req = "scimgate_scim_requests_total"
    assert delta(req, endpoint="/Users", method="POST", status="201") == 3
    assert delta(req, endpoint="/Users", method="POST", status="409") == 1
    assert delta(req, endpoint="/Users", method="GET", status="200") == 2
    assert delta(req, endpoint="/Users", method="GET", status="401") == 1
    assert delta(req, endpoint="/Users/{id}", method="GET", status="200") == 1
    assert delta(req, endpoint="/Users/{id}", method="GET", status="404") == 1
    assert delta(req, endpoint="/Users/{id}", method="PATCH", status="200") == 1
    assert delta(req, endpoint="/Users/{id}", method="DELETE", status="204") == 1
    total = sum(v for (n, _), v in after.items() if n == req) - sum(
        v for (n, _), v in before.items() if n == req
    )
    assert total == 11  # nothing else was counted

    writes = "scimgate_scim_writes_total"
    assert delta(writes, resource="User", operation="create") == 3  # not the 409
    assert delta(writes, resource="User", operation="patch") == 1
    assert delta(writes, resource="User", operation="delete") == 1

    lat = "scimgate_scim_request_seconds"
    assert delta(lat + "_count", endpoint="/Users", method="POST") == 4
    assert delta(lat + "_count", endpoint="/Users/{id}", method="GET") == 2
    assert delta(lat + "_sum", endpoint="/Users", method="POST") > 0
    assert val(after, lat + "_bucket", endpoint="/Users", method="POST", le="+Inf") == val(
        after, lat + "_count", endpoint="/Users", method="POST"
    )
    assert delta("scimgate_auth_failures_total", reason="unknown") == 1


def test_audit_chain_length_is_the_number_of_events(
    scim_server: ScimServer, scim: httpx.Client
) -> None:
    r = scim.post(
        "/Users", json={"schemas": [USER], "userName": f"len-{uuid.uuid4().hex[:8]}@example.com"}
    )
    assert r.status_code == 201
    # The sync engine records its own audit events (applied batches) in the background, so
    # one reading can fall between a commit and the gauge. Compare only when the count did
    # not move around the scrape; a gauge that is really wrong never matches.
    engine = sa.create_engine(scim_server.database_url)
    count = sa.select(sa.func.count()).select_from(tables.audit_events)
    seen: list[tuple[int, float, int]] = []
    try:
        for _ in range(40):
            with engine.connect() as conn:
                before = int(conn.execute(count).scalar() or 0)
            gauge = val(scrape(scim_server), "scimgate_audit_chain_length")
            with engine.connect() as conn:
                after = int(conn.execute(count).scalar() or 0)
            seen.append((before, gauge, after))
            if before == after and gauge == before:
                break
            time.sleep(0.1)
    finally:
        engine.dispose()
    before, gauge, after = seen[-1]
    assert before > 0 and before == after and gauge == before, seen


def test_token_expiry_gauge(scim_server: ScimServer) -> None:
    name = f"okta-{uuid.uuid4().hex[:8]}"
    res = CliRunner().invoke(
        cli_main,
        ["token", "create", name, "--expires-in", "90d", "--dir", str(scim_server.directory)],
    )
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith("sgt_")
    expected = time.time() + 90 * 86400
    samples = scrape(scim_server)
    assert abs(val(samples, "scimgate_token_expiry_timestamp_seconds", token=name) - expected) < 120
    # A token without an expiry has no series (the fixture's "tests" token).
    assert (
        "scimgate_token_expiry_timestamp_seconds",
        frozenset({("token", "tests")}),
    ) not in samples

    res = CliRunner().invoke(
        cli_main, ["token", "revoke", name, "--dir", str(scim_server.directory)]
    )
    assert res.exit_code == 0, res.stderr
    assert ("scimgate_token_expiry_timestamp_seconds", frozenset({("token", name)})) not in scrape(
        scim_server
    )


def test_metrics_reveal_no_secret(scim_server: ScimServer) -> None:
    text = httpx.get(root(scim_server) + "/metrics").text
    assert scim_server.token not in text
    assert "sgt_" not in text and scim_server.database_url not in text


def test_healthz_and_readyz_without_auth(scim_server: ScimServer) -> None:
    r = httpx.get(root(scim_server) + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(root(scim_server) + "/readyz")
    # issue 15: this server has no policy and no target, so it enforces nothing: unready,
    # and the body says why (the database itself is fine).
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unready" and body["database"] == "ok"
    assert [reason.split(":")[0] for reason in body["configuration"]] == [
        "no policy_file in scimgate.yaml",
        "no targets in scimgate.yaml",
    ]
    for secret in (
        scim_server.token,
        "sgt_",
        scim_server.database_url,
        "sqlite",
        "postgresql",
        str(scim_server.directory),
    ):
        assert secret not in r.text, secret
    # Not behind SCIM auth, but not a way around it either.
    assert httpx.get(scim_server.base_url + "/Users").status_code == 401


def test_requests_rejected_while_reading_the_body_are_authenticated_and_counted(
    scim_server: ScimServer, scim: httpx.Client
) -> None:
    before = scrape(scim_server)
    assert scim.post("/Users", content=b"{not json").status_code == 400
    anonymous = httpx.post(
        scim_server.base_url + "/Users",
        content=b"{not json",
        headers={"Content-Type": "application/scim+json"},
    )
    after = scrape(scim_server)
    req = "scimgate_scim_requests_total"
    assert (
        val(after, req, endpoint="/Users", method="POST", status="400")
        - val(before, req, endpoint="/Users", method="POST", status="400")
        == 1
    )
    assert anonymous.status_code == 401
