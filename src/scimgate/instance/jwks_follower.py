"""Following the issuer's key rotations while an instance runs (``identity.jwt.jwks``).

Does: refresh the key store when the JWKS is due (its Cache-Control) or a removed key's
overlap ends; when the keys the config must hold changed, call ``apply`` (under `up`:
render the config again, `haproxy -c`, hitless reload through the master CLI; the sync
engine then carries the identity maps across the reload as for any reload), and audit every
rotation as a ``jwt.keys`` event.
Does not: fetch or parse keys itself (``instance.jwks_keys``, ``policy.jwks``), render rules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict

from scimgate.audit import log as audit
from scimgate.instance.jwks_keys import KeyState, KeyStore, Rotation
from scimgate.store.db import Database

log = logging.getLogger("scimgate.jwks")


def audit_rotation(db: Database, state: KeyState, rotation: Rotation, *, initial: bool) -> None:
    """One ``jwt.keys`` audit event for a refresh that changed the key set."""
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
    ) -> None:
        self.store = store
        self.db = db
        self.apply = apply
        self.clock = clock
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
            audit_rotation(self.db, state, rotation, initial=False)
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

    def refresh_now(self) -> None:
        """Ask for a refresh at once (the next loop turn)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.due_in())
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self.step()
            except Exception:
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
    for key in store.load().accepted(now, overlap):
        rows.append(
            {
                "kid": key.kid,
                "alg": key.alg,
                "size": key.size,
                "first_seen": _iso(key.first_seen),
                "age_seconds": int(now - key.first_seen),
                "state": "listed"
                if key.removed is None
                else f"withdrawn, accepted until {_iso(key.removed + overlap)}",
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
    return out
