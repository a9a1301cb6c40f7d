"""`scimgate audit user`: one person's story from the audit trail, told after real SCIM writes
on a real server (SQLite and PostgreSQL): by userName, SCIM id and e-mail, before and after
the user is deleted; map changes (and their enforcement) only where a policy is configured."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from scimgate.cli import main as cli_main
from scimgate.config import default_sqlite_url
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair
from tests.fixtures.server import ScimServer, scimgate_cmd, start_server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def tag() -> str:
    return uuid.uuid4().hex[:8]


def scimgate(
    directory: Path, *args: str, real_process: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the CLI against an instance directory: in-process by default (same code, no
    interpreter start-up), or as a real `python -m scimgate.cli` process."""
    argv = [*args, "--dir", str(directory)]
    if real_process:
        return subprocess.run(scimgate_cmd(*argv), capture_output=True, text=True, timeout=60)
    res = CliRunner().invoke(cli_main, argv)
    return subprocess.CompletedProcess(argv, res.exit_code, res.stdout, res.stderr)


def story(directory: Path, identity: str, **kw: Any) -> dict[str, Any]:
    p = scimgate(directory, "audit", "user", identity, "--json", **kw)
    assert p.returncode == 0, p.stdout + p.stderr
    return dict(json.loads(p.stdout))


def write_policy(directory: Path) -> str:
    """The demo policy (Admins → /admin, any active user → /) as this instance's policy_file."""
    (directory / "keys").mkdir(parents=True, exist_ok=True)
    (directory / "keys" / "jwt.pub.pem").write_text(generate_rsa_keypair(1024)[1])
    (directory / "policy.yaml").write_text(demo_policy_yaml())
    return "policy_file: policy.yaml\n"


@pytest.fixture(scope="module")
def policy_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScimServer]:
    """An instance with a policy and no HAProxy target."""
    directory = tmp_path_factory.mktemp(f"audit-story-{backend}")
    url = (
        default_sqlite_url(directory)
        if backend == "sqlite"
        else request.getfixturevalue("pg_server").create_database()
    )
    server = start_server(directory, url, extra_yaml=write_policy(directory))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admins(policy_server: ScimServer) -> str:
    with policy_server.client() as scim:
        r = scim.post("/Groups", json={"schemas": [GROUP], "displayName": "Admins"})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def create_user(scim: httpx.Client, user_name: str, email: str) -> str:
    r = scim.post(
        "/Users",
        json={
            "schemas": [USER],
            "userName": user_name,
            "emails": [{"value": email, "type": "work", "primary": True}],
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def okta_lifecycle(scim: httpx.Client, uid: str, gid: str) -> None:
    """Okta's shapes: Push Groups add/remove, path-less replace active=false, then a DELETE."""
    r = scim.patch(
        f"/Groups/{gid}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}],
        },
    )
    assert r.status_code == 204, r.text
    r = scim.patch(
        f"/Groups/{gid}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "remove", "path": f'members[value eq "{uid}"]'}],
        },
    )
    assert r.status_code == 204, r.text
    r = scim.patch(
        f"/Users/{uid}",
        json={"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]},
    )
    assert r.status_code == 200 and r.json()["active"] is False, r.text


def entra_lifecycle(scim: httpx.Client, uid: str, gid: str) -> None:
    """Entra's default dialect: capitalised ops, remove with a value array, "False"."""
    r = scim.patch(
        f"/Groups/{gid}",
        json={
            "schemas": [PATCH],
            "Operations": [
                {"op": "Add", "path": "members", "value": [{"$ref": None, "value": uid}]}
            ],
        },
    )
    assert r.status_code == 204, r.text
    r = scim.patch(
        f"/Groups/{gid}",
        json={
            "schemas": [PATCH],
            "Operations": [
                {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": uid}]}
            ],
        },
    )
    assert r.status_code == 204, r.text
    r = scim.patch(
        f"/Users/{uid}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
        },
    )
    assert r.status_code == 200 and r.json()["active"] is False, r.text


EXPECTED = [
    "created as {name} (active=True)",
    "added to group Admins",
    "removed from group Admins",
    "deactivated",
    "deleted (removed from 0 group(s))",
]


@pytest.mark.parametrize("dialect", ["okta", "entra"])
def test_story_of_a_user_from_creation_to_deletion(
    policy_server: ScimServer, admins: str, dialect: str
) -> None:
    name, email = f"story-{tag()}@example.com", f"story.{tag()}@corp.example.com"
    d = policy_server.directory
    with policy_server.client() as scim:
        uid = create_user(scim, name, email)
        (okta_lifecycle if dialect == "okta" else entra_lifecycle)(scim, uid, admins)

        # While the user exists: the story so far, found by userName (any case).
        before = story(d, name.upper())
        assert before["user_id"] == uid and before["user_name"] == name
        assert [line["what"] for line in before["timeline"]] == [
            e.format(name=name) for e in EXPECTED[:4]
        ]

        assert scim.delete(f"/Users/{uid}").status_code == 204
        assert scim.get(f"/Users/{uid}").status_code == 404

    # After deletion: the same story and its end, by userName, SCIM id and e-mail.
    after = story(d, name, real_process=dialect == "okta")
    assert after == story(d, uid) == story(d, email)
    timeline = after["timeline"]
    assert [line["what"] for line in timeline] == [e.format(name=name) for e in EXPECTED]
    assert timeline[:4] == before["timeline"]
    seqs = [line["seq"] for line in timeline]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [line["ts"] for line in timeline] == sorted(line["ts"] for line in timeline)
    assert {line["actor"] for line in timeline} == {"tests"}

    # With a policy, each change that moved this user's HAProxy entries says how: one entry
    # per identity key (the policy keys on userName and e-mails, which differ here).
    def how(line: dict[str, Any]) -> list[tuple[str | None, bool]]:
        return [(c["value"], c["deprovision"]) for c in line["map_changes"]]

    created, added, removed, deactivated, deleted = timeline
    assert how(created) == [(",", False)] * 2
    assert how(added) == [(",admins,", False)] * 2
    assert how(removed) == [(",", True)] * 2
    assert how(deactivated) == [(None, True)] * 2
    assert "map_changes" not in deleted  # nothing left to remove
    keys = [{c["key"] for c in line["map_changes"]} for line in timeline[:4]]
    assert all(len(k) == 2 and k == keys[0] for k in keys)
    assert all(c["user_id"] == uid for line in timeline[:4] for c in line["map_changes"])
    # No HAProxy targets: nothing enforced, and nothing waiting for a confirmation either.
    for line in timeline[:4]:
        assert line["enforced"] == [] and line["unconfirmed"] == []


def test_delete_of_an_active_user_is_a_deprovision(policy_server: ScimServer, admins: str) -> None:
    name = f"direct-{tag()}@example.com"
    with policy_server.client() as scim:
        uid = create_user(scim, name, name)
        assert (
            scim.patch(
                f"/Groups/{admins}",
                json={
                    "schemas": [PATCH],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}],
                },
            ).status_code
            == 204
        )
        assert scim.delete(f"/Users/{uid}").status_code == 204
    timeline = story(policy_server.directory, name)["timeline"]
    assert [line["what"] for line in timeline] == [
        f"created as {name} (active=True)",
        "added to group Admins",
        "deleted (removed from 1 group(s))",
    ]
    assert [(c["value"], c["deprovision"]) for c in timeline[-1]["map_changes"]] == [(None, True)]
    assert [(c["value"], c["deprovision"]) for c in timeline[1]["map_changes"]] == [
        (",admins,", False)
    ]


def test_story_follows_renames_and_email_changes(policy_server: ScimServer) -> None:
    old, new = f"old-{tag()}@example.com", f"new-{tag()}@example.com"
    mail1, mail2 = f"m1.{tag()}@corp.example.com", f"m2.{tag()}@corp.example.com"
    with policy_server.client() as scim:
        uid = create_user(scim, old, mail1)
        r = scim.patch(
            f"/Users/{uid}",
            json={
                "schemas": [PATCH],
                "Operations": [
                    {"op": "replace", "path": "userName", "value": new},
                    {"op": "replace", "path": 'emails[type eq "work"].value', "value": mail2},
                ],
            },
        )
        assert r.status_code == 200, r.text
        d = policy_server.directory
        for identity in (old, new, mail1, mail2, uid):
            s = story(d, identity)
            assert (s["user_id"], s["user_name"]) == (uid, new), identity
            assert [line["what"] for line in s["timeline"]] == [
                f"created as {old} (active=True)",
                f"emails changed; userName {old} → {new}",
            ]
        assert scim.delete(f"/Users/{uid}").status_code == 204
    for identity in (old, new, mail1, mail2):
        assert story(d, identity)["user_id"] == uid, identity


def test_text_output_and_unknown_user(policy_server: ScimServer) -> None:
    name = f"text-{tag()}@example.com"
    with policy_server.client() as scim:
        uid = create_user(scim, name, name)
    p = scimgate(policy_server.directory, "audit", "user", name)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"user {name} (id {uid})"
    assert lines[1].endswith(f"Z  created as {name} (active=True)")
    assert len(lines) == 2  # no targets: no "enforced on" / "NOT CONFIRMED" lines

    p = scimgate(policy_server.directory, "audit", "user", f"nobody-{tag()}@example.com")
    assert p.returncode == 1
    assert "no user" in p.stderr and "in the store or the audit trail" in p.stderr


def test_no_policy_no_map_changes(scim_server: ScimServer) -> None:
    """Without a policy nothing is computed for HAProxy, and the story says nothing about it."""
    name = f"nopolicy-{tag()}@example.com"
    with scim_server.client() as scim:
        uid = create_user(scim, name, name)
        r = scim.patch(
            f"/Users/{uid}",
            json={
                "schemas": [PATCH],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            },
        )
        assert r.status_code == 200, r.text
    timeline = story(scim_server.directory, uid)["timeline"]
    assert [line["what"] for line in timeline] == [
        f"created as {name} (active=True)",
        "deactivated",
    ]
    for line in timeline:
        assert set(line) == {"ts", "seq", "what", "actor"}


def test_enforcement_times_from_sync_batches_and_resyncs(tmp_path: Path) -> None:
    """What the sync engine records (its own record_applied / record_resync, on a real SQLite
    store) is what `audit user` reports as enforced, per target; the rest is unconfirmed."""
    from scimgate.app.enforcement import PolicyEnforcement
    from scimgate.app.service import ScimService
    from scimgate.audit.log import Actor
    from scimgate.audit.story import user_story
    from scimgate.policy.model import load_policy
    from scimgate.store import migrate
    from scimgate.store.db import Database
    from scimgate.sync.state import record_applied, record_resync

    write_policy(tmp_path)
    db = Database(default_sqlite_url(tmp_path))
    migrate.upgrade(db)
    service = ScimService(
        db, enforcement=PolicyEnforcement(load_policy(tmp_path / "policy.yaml"), b"k" * 32)
    )
    actor, base = Actor(token="okta"), "https://scim.example.com/scim/v2"

    def create(name: str) -> int:
        result = service.create("User", {"schemas": [USER], "userName": name}, actor, base)
        assert len(result.changes) == 1
        return result.changes[0].seq

    a, b = create("a@example.com"), create("b@example.com")
    for target in ("east", "west"):
        record_resync(
            db,
            target,
            reason="startup",
            seq=0,
            entries=0,
            seconds=0.01,
            shards=1,
            applied="2000-01-01T00:00:00.000000Z",
        )
    record_applied(
        db,
        "east",
        first_seq=a,
        last_seq=b,
        set_keys=["k"],
        deleted_keys=[],
        applied="2100-01-01T00:00:00.000001Z",
        entries=2,
    )
    record_resync(
        db,
        "west",
        reason="reload",
        seq=a,
        entries=1,
        seconds=0.01,
        shards=1,
        applied="2100-01-01T00:00:00.000002Z",
    )
    try:
        with db.read() as conn:
            sa_, sb = user_story(conn, "a@example.com"), user_story(conn, "b@example.com")
    finally:
        db.dispose()
    assert sa_ is not None and sb is not None
    (line_a,), (line_b,) = sa_["timeline"], sb["timeline"]
    assert [(e["target"], e["applied"]) for e in line_a["enforced"]] == [
        ("east", "2100-01-01T00:00:00.000001Z"),
        ("west", "2100-01-01T00:00:00.000002Z"),
    ]
    assert line_a["unconfirmed"] == [] and line_a["enforced"][0]["after_ms"] > 0
    assert [e["target"] for e in line_b["enforced"]] == ["east"]
    assert line_b["unconfirmed"] == ["west"]  # west's snapshot was taken before b's change
