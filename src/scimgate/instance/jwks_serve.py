"""Following the issuer's JWKS under `scimgate serve` (the user runs HAProxy, with a config
`scimgate haproxy render` made).

Does: when the policy takes its keys from a JWKS (``identity.jwt.jwks``), fetch it at start
(audited ``jwt.keys`` ``initial``) and run the same follower as `up` (scheduled refresh,
refresh on an unknown kid read from every target's Runtime API). On a key change, for each
target that declares both ``master_api`` and ``config_file`` (the file scimgate rendered
for it): render that target's config again, write it beside the file, check it with
`haproxy -c`, replace the file atomically and reload HAProxy through the master CLI
(hitless; the sync engine loads the identity maps into the new worker, as after any
reload). A target without them is left alone: a warning is logged, its name is recorded in
``DIR/keys/jwks/reload-needed.json`` (shown by `scimgate status`, cleared by
`scimgate haproxy render -o` for it), and each rotation's audit event says
``reload: {target: manual}``.
Does not: start or stop HAProxy, write a config file a target did not declare, fetch or
parse keys (``instance.jwks_keys``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from scimgate.config import Settings, TargetConfig
from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.errors import RuntimeCommandError
from scimgate.haproxy.master import master_command, show_proc
from scimgate.haproxy.process import HAProxyNotFound, check_config, find_haproxy
from scimgate.instance.database import open_database
from scimgate.instance.haproxy_config import choose_map_shards, key_store, render_instance
from scimgate.instance.jwks_follower import KeyFollower, audit_rotation, read_kid_misses
from scimgate.instance.jwks_keys import KeyStore
from scimgate.policy.model import Policy
from scimgate.store.db import Database

log = logging.getLogger("scimgate.jwks")

RELOAD_TIMEOUT = 15.0


class ReloadFailed(RuntimeError):
    """A target's new config was refused (`haproxy -c`) or its reload did not happen."""


def reloadable(target: TargetConfig) -> bool:
    """scimgate may re-render and reload this target: it said where its config is and how
    to reach its master CLI."""
    return bool(target.master_api and target.config_file)


def reload_through_master(address: RuntimeAddress, timeout: float = RELOAD_TIMEOUT) -> None:
    """``reload`` on the master CLI, then wait until the master counts one more reload and
    lists a new worker; a failed reload (``[failed: N]`` up) raises."""
    before = show_proc(address)
    master_command(address, "reload")  # the master closes the CLI, no reply
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            now = show_proc(address, timeout=1.0)
        except (RuntimeCommandError, OSError, ConnectionError) as exc:
            log.debug("master CLI busy during the reload: %s", exc)
            continue
        except Exception as exc:  # the master re-executes: it refuses connections a moment
            log.debug("master CLI not answering during the reload: %s", exc)
            continue
        if now.failed_reloads > before.failed_reloads:
            raise ReloadFailed(f"the master at {address} reports a failed reload")
        if now.reloads > before.reloads and any(
            w.pid not in before.worker_pids for w in now.workers
        ):
            return
    raise ReloadFailed(f"no new worker at {address} within {timeout:.0f} s of the reload")


def _write_private(path: Path, text: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # holds the secret
    with os.fdopen(fd, "w") as f:
        f.write(text)


class ServeKeys:
    """The ``apply`` of `serve`'s key follower: every target brought to the held keys."""

    def __init__(self, settings: Settings, policy: Policy, store: KeyStore) -> None:
        self.settings = settings
        self.policy = policy
        self.store = store
        self.reloads = 0

    def note(self) -> dict[str, object]:
        return {
            "reload": {
                t.name: "master_cli" if reloadable(t) else "manual" for t in self.settings.targets
            }
        }

    def render(self, target: TargetConfig) -> str:
        return render_instance(
            self.settings,
            self.policy,
            target_name=target.name,
            shards=choose_map_shards(self.settings),
        )

    def stale(self, target: TargetConfig) -> bool:
        """The target's config file is not what scimgate renders for it now."""
        assert target.config_file is not None
        try:
            return Path(target.config_file).read_text() != self.render(target)
        except OSError:
            return True

    def apply_target(self, target: TargetConfig) -> bool:
        """Render, check, replace and reload one target; False when the file already held
        this config (nothing to reload)."""
        assert target.config_file is not None and target.master_api is not None
        path = Path(target.config_file)
        text = self.render(target)
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                return False
        staged = path.with_name(path.name + ".next")
        _write_private(staged, text)
        try:
            ok, output = check_config(staged, find_haproxy())
        except HAProxyNotFound as exc:
            staged.unlink()
            raise ReloadFailed(f"no haproxy binary to check the new config with: {exc}") from None
        if not ok:
            staged.unlink()
            raise ReloadFailed(
                f"haproxy -c rejected {target.name}'s config with the new keys:\n{output}"
            )
        staged.replace(path)
        reload_through_master(RuntimeAddress.parse(target.master_api))
        self.reloads += 1
        return True

    def __call__(self, *, manual: bool = True) -> None:
        """Every reloadable target brought to the held keys; the others marked as needing
        a reload by hand (unless ``manual`` is False: nothing changed for them)."""
        kids = [k.kid for k in self.store.pinned()]
        failed: list[str] = []
        for target in self.settings.targets:
            if not reloadable(target):
                if not manual:
                    continue
                self.store.mark_reload_needed(target.name, kids, time.time())
                log.warning(
                    "JWT keys changed; target %s has no master_api and config_file in %s: "
                    "render its config (scimgate haproxy render --target %s -o FILE) and "
                    "reload its HAProxy",
                    target.name, self.settings.config_path.name, target.name,
                )  # fmt: skip
                continue
            try:
                if self.apply_target(target):
                    log.info(
                        "target %s: config rendered with the keys %s, reloaded", target.name, kids
                    )
                self.store.clear_reload_needed(target.name)
            except Exception as exc:  # the others still get their keys; retried next turn
                log.error("target %s: the new JWT keys were not applied: %s", target.name, exc)
                failed.append(f"{target.name}: {exc}")
        if failed:
            raise ReloadFailed("; ".join(failed))


def _misses(settings: Settings) -> list[str]:
    """Unknown kids recorded by any target's HAProxy (a target not answering, or rendered
    without the table, adds none)."""
    kids: list[str] = []
    for target in settings.targets:
        try:
            kids += read_kid_misses(RuntimeAddress.parse(target.runtime_api))
        except Exception as exc:
            log.debug("target %s: unknown-kid table not read: %s", target.name, exc)
    return list(dict.fromkeys(kids))


def start_serve_follower(settings: Settings, policy: Policy) -> KeyFollower | None:
    """The JWKS follower of `serve` (None unless the policy takes keys from a JWKS)."""
    store = key_store(settings, policy)
    if store is None:
        return None
    keys = ServeKeys(settings, policy, store)
    db: Database = open_database(settings)
    state, rotation = store.refresh()
    audit_rotation(db, state, rotation, initial=True, note=keys.note())
    if state.last_error:
        log.warning("JWKS not fetched: %s", state.last_error)
    follower = KeyFollower(store, db, keys, misses=lambda: _misses(settings), note=keys.note())
    try:
        # keys changed while serve was down (or `jwt keys --refresh` ran): the targets whose
        # config scimgate renders are brought up to date now, the others marked
        if rotation.changes_config:
            keys()
        elif any(reloadable(t) and keys.stale(t) for t in settings.targets):
            keys(manual=False)
    except Exception as exc:
        log.error("JWT keys not applied at start (applied again at the next refresh): %s", exc)
        follower.forget_applied()
    follower.start()
    return follower
