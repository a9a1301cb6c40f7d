"""What every part of the rendered HAProxy rules shares: the error type, the transaction
variable names, the deny answers and the small allow-lists of render arguments."""

from __future__ import annotations

from pathlib import Path

from scimgate.policy.model import FILE_PATH_RE, Policy


class RenderError(ValueError):
    """The render arguments (or files the policy points at) are unusable."""


V_IDENTITY = "txn.scimgate_identity"
V_KEY = "txn.scimgate_key"
V_GROUPS = "txn.scimgate_groups"
V_ROUTE = "txn.scimgate_route"
V_DECISION = "txn.scimgate_decision"
V_SCOPES = "txn.scimgate_scopes"
V_HMAC = "proc.scimgate_hmac"
V_BEARER = "txn.scimgate_bearer"

# One printable ASCII token, nothing else. '\z', not '$': PCRE's '$' also matches before a
# final newline, which let "user@example.com\n" through as an identity (HAProxy's regexes are
# PCRE2 on Debian 12's 2.6; the pattern is single-quoted, so the backslash reaches PCRE).
PRINTABLE_TOKEN_REGEX = "^[!-~]+\\z"

_UNAUTHENTICATED_BODY = '\'{"error":"unauthenticated","status":401}\''
_FORBIDDEN_BODY = '\'{"error":"forbidden","status":403}\''
_BAD_REQUEST_BODY = '\'{"error":"ambiguous request","status":400}\''
_TOO_MANY_BODY = '\'{"error":"too many requests","status":429}\''


def require(ok: bool, message: str) -> None:
    if not ok:
        raise RenderError(message)


def acl_name(kind: str, name: str) -> str:
    return f"scimgate_{kind}_{name}"


def deny(status: int, decision: str, condition: str, *, bearer: bool = False) -> list[str]:
    """Record the decision for the log line, then answer ``status`` with a JSON body.

    The deny tests the recorded decision, not ``condition`` again (ACL results are not
    cached: a path regex would run twice per request). A decision is only ever recorded
    right before its own deny, so an earlier pair cannot trigger a later one."""
    if status == 401:
        body = _UNAUTHENTICATED_BODY
        extra = " hdr WWW-Authenticate 'Bearer realm=\"scimgate\"'" if bearer else ""
    elif status == 400:
        body, extra = _BAD_REQUEST_BODY, ""
    elif status == 429:  # RFC 6585 §4
        body, extra = _TOO_MANY_BODY, ""
    else:
        body, extra = _FORBIDDEN_BODY, ""
    return [
        f"http-request set-var({V_DECISION}) str({decision}) if {condition}",
        f"http-request deny deny_status {status} content-type application/json string {body}{extra} "
        f"if {{ var({V_DECISION}) -m str {decision} }}",
    ]


def resolved_file(policy: Policy, path: str, what: str, check: bool) -> str:
    """``path`` resolved against the policy file's folder, safe to write into haproxy.cfg."""
    resolved = policy.resolve_path(path)
    require(
        bool(FILE_PATH_RE.fullmatch(resolved)),
        f"{what} path {resolved!r} has characters that cannot go into haproxy.cfg",
    )
    if check and not Path(resolved).is_file():
        raise RenderError(f"{what} {resolved!r} does not exist")
    return resolved
