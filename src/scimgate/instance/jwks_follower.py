"""Following the issuer's key rotations while an instance runs (``identity.jwt.jwks``).

Does: refresh the key store when the JWKS is due (its Cache-Control) or a removed key's
overlap ends; when the keys the config must hold changed, call ``apply`` (under `up`:
render the config again, `haproxy -c`, hitless reload through the master CLI; the sync
engine then carries the identity maps across the reload as for any reload), and audit every
rotation as a ``jwt.keys`` event. Poll HAProxy's unknown-kid table
(``policy.render_identity.JWT_KID_MISS_TABLE``) every second and fetch the JWKS at once when
a token brought a kid no held key has, at most once per ``unknown_kid_refresh_seconds``
(audited as ``jwt.keys.refresh``, operation ``unknown_kid``).
Does not: fetch or parse keys itself (``instance.jwks_keys``, ``policy.jwks``), render rules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict

from scimgate.audit import log as audit
from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.master import master_command
from scimgate.haproxy.sessions import parse_show_table
from scimgate.instance.haproxy_config import verifies_pss
from scimgate.instance.jwks_keys import KeyState, KeyStore, Rotation
from scimgate.policy.jwks import KID_RE
from scimgate.policy.jwt_model import PSS_ALGORITHMS
from scimgate.policy.render_identity import (
    JWT_KID_MISS_TABLE,
    KID_MISS_EXPIRE_SECONDS,
    KID_MISS_TABLE_SIZE,
)
from scimgate.store.db import Database

MISS_POLL_SECONDS = 1.0
_AUDIT_KIDS = 3  # kids named in a forced refresh's audit event (the count says the rest)
_AUDIT_KID_CHARS = 64


def kids_of_table(reply: str) -> list[str]:
    """The kids in a ``show table`` reply of the unknown-kid table: entry lines only
    (``0x...: key=<kid> use=...``), keys of a JWKS kid's shape only, no duplicates, at most
    as many as the table holds; anything else in the reply is ignored."""
    entries = parse_show_table(reply)[:KID_MISS_TABLE_SIZE]
    return list(dict.fromkeys(e.key for e in entries if KID_RE.fullmatch(e.key)))


def read_kid_misses(address: RuntimeAddress, timeout: float = 2.0) -> list[str]:
    """The kids HAProxy recorded in its unknown-kid table (one worker's stats socket); the
    command is a constant (``show table`` and the constant table name)."""
    return kids_of_table(master_command(address, f"show table {JWT_KID_MISS_TABLE}", timeout))


log = logging.getLogger("scimgate.jwks")


def audit_rotation(
    db: Database,
    state: KeyState,
    rotation: Rotation,
    *,
    initial: bool,
    note: dict[str, object] | None = None,
) -> None:
    """One ``jwt.keys`` audit event for a refresh that changed the key set (``note``: more
    detail, e.g. how `serve` reloads each target)."""
    if not rotation:
        return
    by_kid = {k.kid: k for k in state.keys}
    detail = {
        "jwks_uri": state.jwks_uri,
        **{
            part: [
                {"kid": kid, **({"alg": by_kid[kid].alg} if kid in by_kid else {})} for kid in kids
            ]
            for part, kids in asdict(rotation).items()
        },
        "keys": sorted(by_kid),
        **(note or {}),
    }
    with db.write() as conn:
        audit.ensure_head(conn)
        audit.append(conn, "jwt.keys", operation="initial" if initial else "rotate", detail=detail)


class KeyFollower:
    """The thread that keeps HAProxy's keys in step with the issuer's JWKS."""

    def __init__(
        self,
        store: KeyStore,
        db: Database,
        apply: Callable[[], None],
        *,
        clock: Callable[[], float] = time.time,
        misses: Callable[[], list[str]] | None = None,
        poll_seconds: float = MISS_POLL_SECONDS,
        note: dict[str, object] | None = None,
    ) -> None:
        self.store = store
        self.db = db
        self.apply = apply
        self.clock = clock
        # HAProxy's unknown kids (None: not followed, e.g. refresh_on_unknown_kid is off)
        self.misses = misses if store.source.refresh_on_unknown_kid else None
        self.poll_seconds = poll_seconds
        self.note = note  # added to each rotation's audit event
        self.forced_refreshes = 0
        self._last_forced: float | None = None
        self._tried: dict[str, float] = {}  # kid -> when a forced refresh looked for it
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.rotations = 0
        self.failed_applies = 0
        # the keys the running config holds (it was rendered from the store just before)
        self._applied = self._held(store.load(), clock())

    def due_in(self) -> float:
        state = self.store.load()
        now = self.clock()
        due = [state.next_fetch]
        expiry = state.next_expiry(self.store.source.overlap_seconds)
        if expiry is not None:
            due.append(expiry)
        return max(0.0, min(due) - now)

    def _held(self, state: KeyState, now: float) -> frozenset[tuple[str, str, str]]:
        overlap = self.store.source.overlap_seconds
        return frozenset((k.kid, k.alg, k.thumbprint) for k in state.accepted(now, overlap))

    def step(self) -> Rotation:
        """One refresh; the config is applied again when the keys it must hold differ from
        the ones it was last rendered with (also after `scimgate jwt keys --refresh` ran in
        another process, or after a failed apply)."""
        now = self.clock()
        state, rotation = self.store.refresh(now)
        if rotation:
            log.info("JWT keys changed: %s", asdict(rotation))
            audit_rotation(self.db, state, rotation, initial=False, note=self.note)
        want = self._held(state, now)
        if want != self._applied:
            started = time.monotonic()
            try:
                self.apply()
            except Exception:  # the running config keeps its keys; applied again next turn
                self.failed_applies += 1
                log.exception("applying the new JWT key set failed")
                raise
            self._applied = want
            self.store.prune_files()
            self.rotations += 1
            log.info(
                "JWT key set applied (config rendered, checked, HAProxy reloaded) in %.3f s: %s",
                time.monotonic() - started,
                sorted(kid for kid, _alg, _t in want),
            )
        return rotation

    def forget_applied(self) -> None:
        """The running config's keys are unknown (a failed apply): the next turn applies."""
        self._applied = frozenset()

    def unknown_kids(self) -> list[str]:
        """Kids HAProxy recorded that the key store does not hold (a held kid the running
        config lacks is an apply to retry, not a reason to fetch)."""
        assert self.misses is not None
        held = {kid for kid, _alg, _t in self._held(self.store.load(), self.clock())}
        return [kid for kid in self.misses() if kid not in held]

    def check_misses(self) -> bool:
        """Fetch the JWKS now if HAProxy recorded a kid not looked for yet (a kid is looked
        for once per table expiry) and the last forced fetch is ``unknown_kid_refresh_seconds``
        old; True when it fetched. A flood of random kids costs one fetch per interval."""
        now = self.clock()
        interval = self.store.source.unknown_kid_refresh_seconds
        self._tried = {k: t for k, t in self._tried.items() if now - t < KID_MISS_EXPIRE_SECONDS}
        fresh = [kid for kid in self.unknown_kids() if kid not in self._tried]
        if not fresh:
            return False
        if self._last_forced is not None and now - self._last_forced < interval:
            return False
        self._last_forced = now
        for kid in fresh[: max(0, 4 * KID_MISS_TABLE_SIZE - len(self._tried))]:
            self._tried[kid] = now
        self.forced_refreshes += 1
        log.info("token with unknown kid(s) %s: fetching the JWKS now", fresh[:_AUDIT_KIDS])
        try:
            self.step()
        finally:
            held = {
                k.kid for k in self.store.load().accepted(now, self.store.source.overlap_seconds)
            }
            self._audit_forced(fresh, held)
        return True

    def _audit_forced(self, kids: list[str], held: set[str]) -> None:
        detail = {
            "reason": "unknown_kid",
            "kids": [kid[:_AUDIT_KID_CHARS] for kid in kids[:_AUDIT_KIDS]],
            "unknown_kids": len(kids),
            "found": [kid[:_AUDIT_KID_CHARS] for kid in kids if kid in held][:_AUDIT_KIDS],
            "min_interval_seconds": self.store.source.unknown_kid_refresh_seconds,
        }
        with self.db.write() as conn:
            audit.ensure_head(conn)
            audit.append(conn, "jwt.keys.refresh", operation="unknown_kid", detail=detail)

    def refresh_now(self) -> None:
        """Ask for a refresh at once (the next loop turn)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.due_in()
            if self.misses is not None:
                wait = min(wait, self.poll_seconds)
            woke = self._wake.wait(wait)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                if woke or self.misses is None or self.due_in() <= 0:
                    self.step()
                else:
                    self.check_misses()
            except Exception:  # logged where it failed; HAProxy may be reloading
                log.debug("JWKS follower turn failed", exc_info=True)
                self._stop.wait(1.0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scimgate-jwks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)


def key_rows(store: KeyStore, now: float | None = None) -> list[dict[str, object]]:
    """The key set as `scimgate status` shows it: kid, alg, size, first seen, age, state."""
    now = time.time() if now is None else now
    overlap = store.source.overlap_seconds
    rows: list[dict[str, object]] = []
    keys = store.load().accepted(now, overlap)
    pss = any(k.alg in PSS_ALGORITHMS for k in keys) and not verifies_pss()
    for key in keys:
        left_out = (
            "; left out: this HAProxy cannot verify PS* (2.8+)"
            if pss and key.alg in PSS_ALGORITHMS
            else ""
        )
        rows.append(
            {
                "kid": key.kid,
                "alg": key.alg,
                "size": key.size,
                "first_seen": _iso(key.first_seen),
                "age_seconds": int(now - key.first_seen),
                "state": (
                    "listed"
                    if key.removed is None
                    else f"withdrawn, accepted until {_iso(key.removed + overlap)}"
                )
                + left_out,
            }
        )
    return rows


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def key_table(store: KeyStore) -> list[str]:
    """The `scimgate status` lines of the key set (with the last fetch error, if any)."""
    state = store.load()
    rows = key_rows(store)
    table = [("KID", "ALG", "SIZE", "FIRST SEEN", "AGE", "STATE")]
    table += [
        (str(r["kid"]), str(r["alg"]), str(r["size"]), str(r["first_seen"]),
         _age(int(r["age_seconds"])), str(r["state"]))  # type: ignore[call-overload]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    out = [f"JWT KEYS (from {state.jwks_uri or 'no JWKS fetched yet'})"]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table
    ]
    if state.last_error:
        out.append(f"last JWKS fetch failed: {state.last_error}")
    for target, mark in sorted(store.reload_needed().items()):
        since = mark.get("since")
        when = _iso(since) if isinstance(since, (int, float)) else "?"
        out.append(
            f"reload needed: target {target} runs keys from before {when} "
            f"(scimgate haproxy render --target {target} -o FILE, then reload its HAProxy)"
        )
    return out
