"""HAProxy and instance setup shared by the HAProxy-side sections: the product's own config
(policy.render_config on the demo policy, 16 map shards as chosen for 2.6), preloaded maps
and a preloaded store (direct SQLAlchemy Core bulk inserts)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import free_port, log

SHARDS = 16


def identity(i: int) -> str:
    return f"user{i:07d}@example.com"


@dataclass
class Keys:
    """Demo policy, RSA key pair and HMAC secret of one bench instance directory."""

    base: Path
    policy: Any
    secret: bytes
    private_pem: str
    public_key: Path

    def key(self, ident: str) -> str:
        """compiler.identity_key (checked equal below), with a pre-keyed HMAC for speed."""
        base = self.__dict__.get("_hmac")
        if base is None:
            import hashlib
            import hmac

            from scimgate.policy.compiler import identity_key

            base = self.__dict__["_hmac"] = hmac.new(self.secret, digestmod=hashlib.sha256)
            h = base.copy()
            h.update(b"probe@example.com")
            assert h.hexdigest().upper() == identity_key("probe@example.com", self.secret)
        h = base.copy()
        h.update(ident.encode())  # identities here are already normalised (lower-case ASCII)
        return h.hexdigest().upper()

    def jwt(self, ident: str, ttl: int = 3600) -> str:
        """An RS256 token as `scimgate jwt mint` makes it (jwtmint.mint_jwt), signed with a
        key object loaded once: parsing the PEM costs ~0.1 s per token (RSA key checks)."""
        from scimgate.policy.jwtmint import mint_jwt

        key = self.__dict__.get("_rsa")
        if key is None:
            from cryptography.hazmat.primitives import serialization

            key = self.__dict__["_rsa"] = serialization.load_pem_private_key(
                self.private_pem.encode(), None
            )
        return mint_jwt(
            key,
            subject_claim="email",
            identity=ident,
            algorithm="RS256",  # type: ignore[arg-type]
            audience="scimgate-demo",
            issuer="https://idp.example.com/",
            ttl_seconds=ttl,
        )

        return mint_jwt(
            self.private_pem,
            subject_claim="email",
            identity=ident,
            algorithm="RS256",
            audience="scimgate-demo",
            issuer="https://idp.example.com/",
            ttl_seconds=ttl,
        )


HEADER_IDENTITY = """identity:
  source: header
  header:
    name: X-User
    trusted_sources: [127.0.0.1/32]
  key_attributes: [userName, emails]
"""


def header_policy(keys: Keys) -> Any:
    """The demo policy with identity from a trusted header instead of a JWT."""
    import re

    from scimgate.policy.model import load_policy

    text = (keys.base / "policy.yaml").read_text()
    text = re.sub(r"(?m)^identity:\n(?:  .*\n)+", HEADER_IDENTITY, text)
    path = keys.base / "policy-header.yaml"
    path.write_text(text)
    return load_policy(path)


def make_keys(base: Path) -> Keys:
    from scimgate.instance.layout import Layout, ensure_demo_keys, load_or_create_secret
    from scimgate.policy.jwtmint import demo_policy_yaml
    from scimgate.policy.model import load_policy

    base.mkdir(parents=True, exist_ok=True)
    layout = Layout(base)
    ensure_demo_keys(layout)
    layout.policy.write_text(demo_policy_yaml(public_key=str(layout.public_key)))
    secret = load_or_create_secret(layout.hmac_key)
    return Keys(
        base, load_policy(layout.policy), secret, layout.private_key.read_text(), layout.public_key
    )


@dataclass
class Proxy:
    """One HAProxy started from the product's rendered config (+ optional extra frontends)."""

    dir: Path
    port: int
    proc: Any
    admin: Path
    master: Path
    map_dir: Path
    extra_ports: dict[str, int] = field(default_factory=dict)

    def worker_pid(self) -> int:
        return self.proc.master_procs().worker_pids[0]

    def client(self) -> Any:
        from scimgate.haproxy import RuntimeClient
        from scimgate.sync.apply import ENTRY_VALIDATOR  # the sync engine's allow-lists

        return RuntimeClient(f"unix:{self.admin}", timeout=60, validator=ENTRY_VALIDATOR)

    def stop(self) -> None:
        self.proc.stop()


def lookup_frontend(name: str, port: int, map_dir: Path) -> str:
    """A header-identity frontend: the same shard selection and map lookup the product
    renders, with the pseudonym key taken from X-Key (the pure lookup cost)."""
    from scimgate.policy.compiler import OVERLAY_MAP_NAME, map_file_names

    lines = [
        f"frontend {name}",
        f"    bind 127.0.0.1:{port}",
        "    http-request set-var(txn.k) req.fhdr(x-key)",
        f"    http-request set-var(txn.g) var(txn.k),map({map_dir}/{OVERLAY_MAP_NAME})",
    ]
    for shard, fname in enumerate(map_file_names(SHARDS)):
        first = "0123456789ABCDEF"[shard]
        guard = f"{{ var(txn.k) -m beg {first} }} " if SHARDS > 1 else ""  # one map from 2.9
        lines.append(
            f"    http-request set-var(txn.g) var(txn.k),map({map_dir}/{fname}) "
            f"if {guard}!{{ var(txn.g) -m found }}"
        )
    lines += [
        "    http-request deny deny_status 403 unless { var(txn.g) -m beg , }",
        "    http-request return status 200 content-type text/plain string ok",
        "",
    ]
    return "\n".join(lines)


def plain_frontend(name: str, port: int) -> str:
    return (
        f"frontend {name}\n    bind 127.0.0.1:{port}\n"
        "    http-request return status 200 content-type text/plain string ok\n"
    )


def start_proxy(
    d: Path,
    keys: Keys,
    entries: dict[str, str] | None = None,
    *,
    extra: tuple[str, ...] = (),
    policy: Any = None,
) -> Proxy:
    """Render the product config for keys.policy into d, write the map files, start HAProxy."""
    from scimgate.haproxy.process import HAProxyProcess
    from scimgate.instance.haproxy_config import write_map_files
    from scimgate.policy.render import render_config

    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    map_dir = d / "maps"
    write_map_files(map_dir, entries or {}, SHARDS)
    text = render_config(
        policy if policy is not None else keys.policy,
        mode="full",
        map_dir=str(map_dir),
        shards=SHARDS,
        hmac_secret_b64=base64.b64encode(keys.secret).decode(),
        bind=f"127.0.0.1:{port}",
        stats_socket=str(d / "admin.sock"),
        master_socket=str(d / "master.sock"),
        log_target="stdout format raw",
    )
    extra_ports: dict[str, int] = {}
    for kind in extra:
        p = free_port()
        extra_ports[kind] = p
        text += "\n" + (
            plain_frontend("fe_bench_plain", p)
            if kind == "plain"
            else lookup_frontend("fe_bench_lookup", p, map_dir)
        )
    cfg = d / "haproxy.cfg"
    cfg.write_text(text)
    proc = HAProxyProcess(
        cfg, d / "master.sock", stats_socket=f"unix:{d / 'admin.sock'}", log_path=d / "haproxy.log"
    )
    proc.start(ready_timeout=120)
    return Proxy(d, port, proc, d / "admin.sock", d / "master.sock", map_dir, extra_ports)


_ENTRIES: dict[tuple[bytes, int], dict[str, str]] = {}


def synthetic_entries(keys: Keys, n: int) -> dict[str, str]:
    """{key(identity(i)): ","} for i < n (cached per secret: the 1M set is reused)."""
    for (sec, m), ents in _ENTRIES.items():
        if sec == keys.secret and m >= n:
            return ents if m == n else dict(list(ents.items())[:n])
    ents = {keys.key(identity(i)): "," for i in range(n)}
    _ENTRIES[(keys.secret, n)] = ents
    return ents


_SHARED: dict[str, Keys] = {}


def shared_keys(workdir: Path) -> Keys:
    """One demo key set per bench run (so the 1M-entry key set is computed once)."""
    if "k" not in _SHARED:
        _SHARED["k"] = make_keys(workdir.parent / "keys")
    return _SHARED["k"]


# --- store preload -----------------------------------------------------------------------------


def user_row(i: int, now: str) -> dict[str, Any]:
    name = identity(i)
    attrs = {
        "userName": name,
        "name": {"givenName": f"User{i}", "familyName": "Bench"},
        "displayName": f"User {i}",
        "active": True,
        "emails": [{"value": name, "type": "work", "primary": True}],
    }
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "user_name": name,
        "user_name_lower": name,
        "external_id": f"ext-{i}",
        "active": True,
        "display_name": f"User {i}",
        "attrs": attrs,
        "version": 1,
        "created": now,
        "last_modified": now,
    }


def preload(
    db_url: str,
    n_users: int,
    *,
    keys: Keys | None = None,
    groups: int = 0,
    members_per_group: int = 0,
    big_group: int = 0,
    batch: int = 20_000,
) -> dict[str, Any]:
    """Bulk-insert n_users users (and their map entries when keys are given), `groups`
    groups with `members_per_group` members each, and optionally one group holding the
    first `big_group` users. Returns ids and timings."""

    from scimgate.store import migrate, tables
    from scimgate.store.db import Database, now_iso

    t0 = time.monotonic()
    db = Database(db_url, sqlite_synchronous="OFF")
    migrate.upgrade(db)
    now = now_iso()
    out: dict[str, Any] = {}
    sqlite = db.dialect == "sqlite"
    cols = [
        "id",
        "user_name",
        "user_name_lower",
        "external_id",
        "active",
        "display_name",
        "attrs",
        "version",
        "created",
        "last_modified",
    ]
    with db.engine.begin() as conn:
        for start in range(0, n_users, batch):
            rows = [user_row(i, now) for i in range(start, min(n_users, start + batch))]
            if sqlite:  # DBAPI executemany: the same rows, without per-row Core overhead
                conn.exec_driver_sql(
                    f"INSERT INTO scim_users ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [tuple(json.dumps(r[c]) if c == "attrs" else r[c] for c in cols) for r in rows],
                )
            else:
                conn.execute(tables.users.insert(), rows)
            if keys is not None:
                ents = [(keys.key(r["user_name"]), ",", r["id"]) for r in rows]
                if sqlite:
                    conn.exec_driver_sql(
                        "INSERT INTO map_entries (identity_key, value, user_id) VALUES (?, ?, ?)",
                        ents,
                    )
                else:
                    conn.execute(
                        tables.map_entries.insert(),
                        [{"identity_key": a, "value": b, "user_id": c} for a, b, c in ents],
                    )
        gids = []
        for g in range(groups):
            gid = str(uuid.UUID(int=(1 << 64) + g))
            gids.append(gid)
            conn.execute(
                tables.groups.insert().values(
                    id=gid,
                    display_name=f"Group {g}",
                    display_name_lower=f"group {g}",
                    external_id=f"gext-{g}",
                    attrs={"displayName": f"Group {g}"},
                    version=1,
                    created=now,
                    last_modified=now,
                )
            )
            if members_per_group:
                conn.execute(
                    tables.members.insert(),
                    [
                        {
                            "group_id": gid,
                            "member_id": str(
                                uuid.UUID(int=((g * members_per_group + j) % n_users) + 1)
                            ),
                            "member_type": "User",
                        }
                        for j in range(members_per_group)
                    ],
                )
        if big_group:
            gid = str(uuid.UUID(int=(1 << 65)))
            conn.execute(
                tables.groups.insert().values(
                    id=gid,
                    display_name="Big group",
                    display_name_lower="big group",
                    external_id="big",
                    attrs={"displayName": "Big group"},
                    version=1,
                    created=now,
                    last_modified=now,
                )
            )
            for start in range(0, big_group, batch):
                conn.execute(
                    tables.members.insert(),
                    [
                        {
                            "group_id": gid,
                            "member_id": str(uuid.UUID(int=i + 1)),
                            "member_type": "User",
                        }
                        for i in range(start, min(big_group, start + batch))
                    ],
                )
            out["big_group_id"] = gid
    db.dispose()
    out["group_ids"] = gids
    out["seconds"] = round(time.monotonic() - t0, 1)
    log(
        f"  preloaded {n_users:,} users{' + map entries' if keys else ''}, "
        f"{groups} groups, "
        f"big group {big_group:,} in {out['seconds']} s"
    )
    return out


def user_id(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def wrk_lua(path: Path, header: str, values: list[str]) -> Path:
    """A wrk script that sends a random value of `values` in `header` on every request."""
    body = ",\n".join(json.dumps(v) for v in values)
    path.write_text(
        "local vals = {\n" + body + "\n}\nlocal n = #vals\n"
        "math.randomseed(os.time())\n"
        "request = function()\n"
        f"  return wrk.format('GET', '/', {{['{header}'] = "
        + ("'Bearer ' .. " if header == "Authorization" else "")
        + "vals[math.random(n)]})\nend\n"
    )
    return path
