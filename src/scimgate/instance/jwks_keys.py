"""The issuer's signing keys of an instance (``identity.jwt.jwks``): fetched over HTTP, kept
as one PUBLIC KEY PEM per ``kid`` in ``DIR/keys/jwks/`` with a ``state.json`` that says when
each key was first seen and when the JWKS stopped listing it.

Does: OIDC discovery and the JWKS fetch (https only, except to loopback; redirects only to
such URLs; ``If-None-Match`` with the last ETag; Cache-Control ``max-age`` decides the next
fetch; bounded retries with exponential backoff; a size limit), write key files atomically,
and say which keys the rendered config must hold now (listed, or removed less than
``overlap_seconds`` ago).
Does not: parse keys (``policy.jwks``), render the config or reload HAProxy
(``instance.jwks_follower``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scimgate.policy.jwks import (
    JwkKey,
    JwksError,
    PinnedKey,
    cache_seconds,
    discovery_url,
    jwks_uri_from_discovery,
    parse_jwks,
)
from scimgate.policy.jwt_model import PSS_ALGORITHMS
from scimgate.policy.model import JwksSource, check_key_url, is_loopback_host

log = logging.getLogger("scimgate.jwks")

STATE_NAME = "state.json"
# targets whose HAProxy scimgate cannot reload and whose config predates the key set
RELOAD_NEEDED_NAME = "reload-needed.json"
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 8.0


class FetchError(RuntimeError):
    """The discovery document or the JWKS could not be fetched (after the retries)."""


@dataclass
class Fetched:
    status: int  # 200 or 304
    body: bytes
    etag: str | None
    cache_control: str | None


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to https (or http on loopback), at most 3 times."""

    max_redirections = 3

    def redirect_request(  # type: ignore[no-untyped-def]
        self, req, fp, code, msg, headers, newurl
    ):
        try:
            check_key_url(newurl, "redirect target")
        except ValueError as exc:
            raise FetchError(str(exc)) from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urlsplit(url).hostname or ""
    handlers: list[Any] = [_CheckedRedirects()]
    if is_loopback_host(host):
        handlers.append(urllib.request.ProxyHandler({}))  # never send loopback to a proxy
    return urllib.request.build_opener(*handlers)


def fetch(
    url: str,
    *,
    etag: str | None = None,
    timeout: float,
    max_bytes: int,
    retries: int,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """GET ``url``; a 304 when ``etag`` still matches. Network errors, 5xx and 429 are
    retried ``retries`` times (0.5 s, 1 s, 2 s ... up to 8 s apart); anything else fails."""
    try:
        check_key_url(url, "key URL")
    except ValueError as exc:
        raise FetchError(str(exc)) from None
    headers = {"Accept": "application/json", "User-Agent": "scimgate-jwks"}
    if etag:
        headers["If-None-Match"] = etag
    opener = _opener(url)
    delay = _BACKOFF_FIRST
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            sleep(delay)
            delay = min(_BACKOFF_MAX, delay * 2)
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
                body = r.read(max_bytes + 1)
                if len(body) > max_bytes:
                    raise FetchError(f"{url}: response larger than {max_bytes} bytes")
                return Fetched(200, body, r.headers.get("ETag"), r.headers.get("Cache-Control"))
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return Fetched(304, b"", exc.headers.get("ETag") or etag, exc.headers.get(
                    "Cache-Control"
                ))  # fmt: skip
            last = f"{url}: HTTP {exc.code}"
            if exc.code < 500 and exc.code != 429:
                break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last = f"{url}: {getattr(exc, 'reason', exc)}"
    raise FetchError(last)


# ---------------------------------------------------------------------------------------------
# The key store of an instance directory


@dataclass
class StoredKey:
    kid: str
    alg: str
    kty: str
    size: str
    thumbprint: str
    file: str
    first_seen: float
    removed: float | None = None  # when the JWKS stopped listing it


@dataclass
class KeyState:
    jwks_uri: str | None = None
    etag: str | None = None
    fetched: float | None = None
    next_fetch: float = 0.0
    last_error: str | None = None
    refused: list[str] = field(default_factory=list)
    keys: list[StoredKey] = field(default_factory=list)

    def accepted(self, now: float, overlap: int) -> list[StoredKey]:
        """Listed keys, and removed ones still inside the overlap."""
        return [k for k in self.keys if k.removed is None or now < k.removed + overlap]

    def next_expiry(self, overlap: int) -> float | None:
        ends = [k.removed + overlap for k in self.keys if k.removed is not None]
        return min(ends) if ends else None


@dataclass
class Rotation:
    """What one refresh changed in the set of keys the config holds."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # no longer listed: overlap starts
    expired: list[str] = field(default_factory=list)  # overlap over: no longer accepted
    replaced: list[str] = field(default_factory=list)  # same kid, other key material

    @property
    def changes_config(self) -> bool:
        return bool(self.added or self.expired or self.replaced)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.expired or self.replaced)


class KeyStore:
    """``DIR/keys/jwks``: the PEM files and state.json (both written atomically)."""

    def __init__(self, directory: Path, source: JwksSource, issuer: str) -> None:
        self.directory = directory
        self.source = source
        self.issuer = issuer

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_NAME

    def load(self) -> KeyState:
        try:
            raw = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return KeyState()
        keys = [StoredKey(**k) for k in raw.pop("keys", [])]
        return KeyState(**raw, keys=keys)

    def _write(self, path: Path, text: str, mode: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        tmp.replace(path)  # atomic: HAProxy (re)loading never sees half a file

    def save(self, state: KeyState) -> None:
        self._write(self.state_path, json.dumps(asdict(state), indent=2) + "\n", 0o644)

    def pinned(self, now: float | None = None, *, pss: bool = True) -> list[PinnedKey]:
        """The keys the rendered config holds now (``pss`` False: for an HAProxy that cannot
        verify PS* signatures, those keys are marked not verifiable)."""
        state = self.load()
        keys = state.accepted(time.time() if now is None else now, self.source.overlap_seconds)
        return [
            PinnedKey(
                k.kid, k.alg, str(self.directory / k.file), pss or k.alg not in PSS_ALGORITHMS
            )
            for k in keys
        ]

    def jwks_uri(self, state: KeyState) -> str:
        if self.source.jwks_uri is not None:
            return self.source.jwks_uri
        s = self.source
        found = fetch(
            discovery_url(self.issuer), timeout=s.timeout_seconds, max_bytes=s.max_bytes,
            retries=s.retries,
        )  # fmt: skip
        uri = jwks_uri_from_discovery(found.body, self.issuer)
        try:
            check_key_url(uri, "the discovered jwks_uri")
        except ValueError as exc:
            raise JwksError(str(exc)) from None
        return uri

    def refresh(self, now: float | None = None) -> tuple[KeyState, Rotation]:
        """Fetch (when due or forced by the caller), update the files and the state; expire
        keys whose overlap is over. A failed fetch keeps every key as it was."""
        now = time.time() if now is None else now
        state = self.load()
        rotation = Rotation()
        s = self.source
        try:
            uri = self.jwks_uri(state)
            if uri != state.jwks_uri:
                state.etag = None
            found = fetch(
                uri, etag=state.etag, timeout=s.timeout_seconds, max_bytes=s.max_bytes,
                retries=s.retries,
            )  # fmt: skip
            state.jwks_uri, state.fetched, state.last_error = uri, now, None
            state.next_fetch = now + cache_seconds(
                found.cache_control, low=s.min_refresh_seconds, high=s.max_refresh_seconds
            )
            if found.status == 200:
                keys, state.refused = parse_jwks(
                    found.body, algorithms=s.algorithms, max_keys=s.max_keys
                )
                state.etag = found.etag
                self._merge(state, keys, now, rotation)
        except (FetchError, JwksError) as exc:
            state.last_error = str(exc)
            state.next_fetch = now + s.min_refresh_seconds
            log.warning("JWKS refresh failed (keeping %d keys): %s", len(state.keys), exc)
        self._expire(state, now, rotation)
        self.save(state)
        return state, rotation

    def _merge(self, state: KeyState, keys: list[JwkKey], now: float, rotation: Rotation) -> None:
        listed = {k.kid: k for k in keys}
        held = {k.kid: k for k in state.keys}
        for kid, key in listed.items():
            old = held.get(kid)
            if old is not None and old.thumbprint == key.thumbprint and old.alg == key.alg:
                if old.removed is not None:  # listed again
                    old.removed = None
                    rotation.added.append(kid)
                continue
            self._write(self.directory / key.file_name, key.pem, 0o644)
            stored = StoredKey(kid, key.alg, key.kty, key.size, key.thumbprint, key.file_name, now)
            if old is not None:
                # one kid selects one key: the new material replaces the old at once
                rotation.replaced.append(kid)
                state.keys[state.keys.index(old)] = stored
            else:
                rotation.added.append(kid)
                state.keys.append(stored)
        for stored_key in state.keys:
            if stored_key.kid not in listed and stored_key.removed is None:
                stored_key.removed = now
                rotation.removed.append(stored_key.kid)

    def _expire(self, state: KeyState, now: float, rotation: Rotation) -> None:
        overlap = self.source.overlap_seconds
        for key in list(state.keys):
            if key.removed is not None and now >= key.removed + overlap:
                state.keys.remove(key)
                rotation.expired.append(key.kid)

    # ---- targets to reload by hand (`serve`, a target without master_api and config_file)

    def reload_needed(self) -> dict[str, dict[str, Any]]:
        """target name -> {"since": when the keys changed (epoch s), "keys": the kids}."""
        try:
            raw = json.loads((self.directory / RELOAD_NEEDED_NAME).read_text())
        except (OSError, ValueError):
            return {}
        return (
            {str(k): v for k, v in raw.items() if isinstance(v, dict)}
            if isinstance(raw, dict)
            else {}
        )

    def _save_reload_needed(self, marks: dict[str, dict[str, Any]]) -> None:
        self._write(self.directory / RELOAD_NEEDED_NAME, json.dumps(marks, indent=2) + "\n", 0o644)

    def mark_reload_needed(self, target: str, kids: list[str], now: float) -> None:
        marks = self.reload_needed()
        since = marks.get(target, {}).get("since", now)  # the first change not applied yet
        marks[target] = {"since": since, "keys": sorted(kids)}
        self._save_reload_needed(marks)

    def clear_reload_needed(self, target: str) -> None:
        """The target's config was rendered with the current keys (by `haproxy render -o`,
        or by `serve`, which also reloaded it)."""
        marks = self.reload_needed()
        if marks.pop(target, None) is not None:
            self._save_reload_needed(marks)

    def prune_files(self) -> None:
        """Remove PEM files no key of the state names (once the config no longer does)."""
        named = {k.file for k in self.load().keys}
        for path in self.directory.glob("kid-*.pem"):
            if path.name not in named:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
