"""HAProxy propagation as the API and the use cases see it: wait until a committed change is
confirmed by every target (read-your-writes), and whether the instance is ready.

Does: define the interface the sync engine offers them (``Propagation``, a Protocol: the
API never imports the engine) and the readiness verdict (database reachable, every target
ready).
Does not: propagate anything (``scimgate.sync`` follows the change log), or answer HTTP.
"""

from __future__ import annotations

from typing import Any, Protocol

from scimgate.store.db import Database


class Propagation(Protocol):
    """The sync engine, as the API sees it (``sync.engine.SyncEngine``)."""

    async def wait_confirmed(self, seq: int, timeout: float) -> bool: ...

    def ready(self) -> tuple[bool, dict[str, Any]]: ...


class Readiness:
    """Whether the instance is ready to serve: its database and its targets."""

    def __init__(
        self,
        db: Database,
        propagation: Propagation | None,
        configuration_problems: list[str] | None = None,
    ) -> None:
        self.db = db
        self.propagation = propagation
        # What the instance's settings lack for enforcement (no policy, no target): such an
        # instance stores identities that no HAProxy enforces, so it is never ready.
        self.configuration_problems = list(configuration_problems or [])

    def check(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the configuration enforces something, the database answers and (with
        a sync engine) every target is ready; the detail says which part is not."""
        detail: dict[str, Any] = {}
        ok = self.db.reachable()
        detail["database"] = "ok" if ok else "unreachable"
        if self.configuration_problems:
            ok = False
            detail["configuration"] = self.configuration_problems
        if self.propagation is not None:
            sync_ok, sync_detail = self.propagation.ready()
            detail["targets"] = sync_detail
            ok = ok and sync_ok
        return ok, detail
