"""Render the HAProxy frontend and backend that put the SCIM endpoint on the network.

The IdP reaches scimgate only through this frontend (``scim_front:`` in scimgate.yaml); the
direct port stays on loopback. Request pipeline (first failing step answers):

  0. TLS (HTTP/1.1 only: every request body then has a Content-Length or is chunked);
     request line + headers due within ``http_request_timeout`` (408), client inactivity
     ``client_timeout``; more than ``max_connections_per_source`` open connections from one
     address: the connection is refused
  1. source not in ``allowed_sources`` (when listed: the IdP's published ranges) -> 403
  2. more than ``rate_limit.requests`` per ``rate_limit.period`` from one address -> 429 with
     Retry-After
  3. a path outside /scim/v2 -> 404 (/metrics, /readyz stay on the direct port)
  4. Content-Length over scimgate's own limit (``bulk_max_payload_bytes`` on /Bulk,
     ``max_body_bytes`` elsewhere) -> 413; a chunked body is counted by scimgate itself
  5. forwarded headers: the client's X-Forwarded-*, Forwarded and X-Real-IP are dropped, and
     X-Forwarded-For / X-Forwarded-Proto set from this connection; scimgate believes them
     only on the unix socket (or from ``trusted_proxies``)

Every refusal is an RFC 7644 §3.12 error body. Checked with ``haproxy -c`` and live requests
on 2.6.12 (tests/e2e/test_scim_front.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from scimgate.config import ScimFront, parse_bind
from scimgate.policy.model import FILE_PATH_RE
from scimgate.policy.render import RenderError
from scimgate.scim.errors import ERROR_SCHEMA

SCIM_FRONTEND = "fe_scimgate_scim"
SCIM_BACKEND = "be_scimgate_scim"
SCIM_BASE_PATH = "/scim/v2"
# scimgate's answer to one request may take a while (a bulk of 1,000 operations, the
# read-your-writes wait); HAProxy queues what is over the server's maxconn this long.
UPSTREAM_MAXCONN = 100
QUEUE_TIMEOUT_S = 30
STICK_TABLE_SIZE = "100k"
# Headers only a proxy may set: a client's copies are dropped before HAProxy adds its own.
FORWARDING_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
                      "X-Forwarded-Port", "Forwarded", "X-Real-IP")  # fmt: skip


class ScimFrontError(RenderError):
    """The scim_front settings (or the certificate they point at) cannot be rendered."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ScimFrontError(message)


def _duration(seconds: float) -> str:
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _error_body(status: int, detail: str) -> str:
    # RFC 7644 §3.12: status is a string; single-quoted in haproxy.cfg (the JSON has no ').
    body = json.dumps(
        {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail},
        separators=(",", ":"),
    )
    return f"content-type application/scim+json string '{body}'"


def _deny(status: int, detail: str, condition: str, extra: str = "") -> str:
    return (
        f"http-request deny deny_status {status} {_error_body(status, detail)}{extra} {condition}"
    )


def _check_certificate(path: str) -> None:
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ScimFrontError(f"scim_front.certificate {path!r} cannot be read: {exc}") from None
    _require(
        "-----BEGIN CERTIFICATE-----" in text,
        f"scim_front.certificate {path!r} holds no '-----BEGIN CERTIFICATE-----' PEM",
    )
    # HAProxy also loads the key from '<certificate>.key' (ssl-load-extra-files).
    _require(
        "PRIVATE KEY-----" in text or Path(path + ".key").is_file(),
        f"scim_front.certificate {path!r} holds no private key (HAProxy's crt needs the "
        "certificate chain and its key in one PEM, or the key in a .key file beside it)",
    )


def upstream_address(*, unix_socket: str | None, host: str, port: int) -> str:
    """Where HAProxy reaches scimgate: its unix socket, else its TCP port."""
    if unix_socket is not None:
        return f"unix@{unix_socket}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_scim_front(
    front: ScimFront,
    *,
    certificate: str,
    upstream: str,
    max_body_bytes: int,
    bulk_max_payload_bytes: int,
    check_files: bool = True,
) -> list[str]:
    """The SCIM frontend and its backend, as top-level haproxy.cfg lines.

    ``certificate`` is the PEM HAProxy serves (chain + key); ``upstream`` is scimgate's
    address (``unix@/path`` or ``ip:port``, see :func:`upstream_address`); the two body limits
    are scimgate's own, so HAProxy refuses exactly what scimgate would."""
    try:
        parse_bind(front.bind)
    except ValueError as exc:
        raise ScimFrontError(f"scim_front.bind {front.bind!r}: {exc}") from None
    _require(
        certificate.startswith("/") and bool(FILE_PATH_RE.fullmatch(certificate)),
        f"scim_front.certificate must be an absolute path of letters, digits and . _ / + -: "
        f"{certificate!r}",
    )
    if check_files:
        _check_certificate(certificate)
    if upstream.startswith("unix@"):
        _require(
            upstream[5:].startswith("/") and bool(FILE_PATH_RE.fullmatch(upstream[5:])),
            f"unix_socket must be an absolute path of letters, digits and . _ / + -: {upstream!r}",
        )
    else:
        try:
            parse_bind(upstream)
        except ValueError as exc:
            raise ScimFrontError(f"upstream {upstream!r}: {exc}") from None
    _require(max_body_bytes > 0 and bulk_max_payload_bytes > 0, "body limits must be positive")

    rate = front.rate_limit
    period = max(1, round(rate.period))
    allowed = "scimgate_scim_allowed_src"
    only_allowed = f" if {allowed}" if front.allowed_sources else ""
    fe = [
        f"    bind {front.bind} ssl crt {certificate} alpn http/1.1 ssl-min-ver TLSv1.2",
        "    mode http",
        "    option httplog",
        f"    maxconn {front.max_connections}",
        "    # request line + headers, whole (a slow sender gets 408); then client inactivity",
        f"    timeout http-request {_duration(front.http_request_timeout)}",
        f"    timeout client {_duration(front.client_timeout)}",
        "    # per source address: open connections and the request rate",
        f"    stick-table type ipv6 size {STICK_TABLE_SIZE} expire {max(period, 60)}s "
        f"store conn_cur,http_req_rate({period}s)",
    ]
    if front.allowed_sources:
        fe += [
            "    # the IdP's published source ranges (scim_front.allowed_sources)",
            f"    acl {allowed} src {' '.join(front.allowed_sources)}",
        ]
    fe += [
        f"    tcp-request connection track-sc0 src{only_allowed}",
        "    tcp-request connection reject if { sc0_conn_cur gt "
        f"{front.max_connections_per_source} }}",
    ]
    if front.allowed_sources:
        fe.append("    " + _deny(403, "source address not allowed", f"unless {allowed}"))
    if rate.requests > 0:
        fe.append(
            "    "
            + _deny(
                429,
                f"too many requests: at most {rate.requests} per {period} s from one address",
                f"if {{ sc0_http_req_rate gt {rate.requests} }}",
                extra=f" hdr Retry-After {period}",
            )
        )
    base = SCIM_BASE_PATH
    fe += [
        f"    acl scimgate_scim_path path {base}",
        f"    acl scimgate_scim_path path_beg {base}/",
        "    " + _deny(404, f"only {base} is served here", "unless scimgate_scim_path"),
        "    # RFC 7644 §3.7.4: /Bulk has its own limit (maxPayloadSize); scimgate's own",
        f"    acl scimgate_scim_bulk path {base}/Bulk",
        "    "
        + _deny(
            413,
            f"request body over {bulk_max_payload_bytes} bytes",
            f"if scimgate_scim_bulk {{ req.hdr_val(content-length) gt {bulk_max_payload_bytes} }}",
        ),
        "    "
        + _deny(
            413,
            f"request body over {max_body_bytes} bytes",
            f"if !scimgate_scim_bulk {{ req.hdr_val(content-length) gt {max_body_bytes} }}",
        ),
        "    # only this proxy says where a request came from",
        *[f"    http-request del-header {name}" for name in FORWARDING_HEADERS],
        "    http-request set-header X-Forwarded-For %[src]",
        "    http-request set-header X-Forwarded-Proto https",
        f"    default_backend {SCIM_BACKEND}",
    ]
    return [
        "# --- scimgate: the SCIM endpoint for the IdP (scim_front in scimgate.yaml) ---",
        f"frontend {SCIM_FRONTEND}",
        *fe,
        "",
        f"backend {SCIM_BACKEND}",
        "    mode http",
        "    # one request per connection to scimgate: no keep-alive race with its idle timeout",
        "    option http-server-close",
        "    timeout connect 5s",
        f"    timeout server {_duration(front.server_timeout)}",
        f"    timeout queue {QUEUE_TIMEOUT_S}s",
        f"    server scimgate {upstream} maxconn {UPSTREAM_MAXCONN}",
    ]
