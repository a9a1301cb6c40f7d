"""A local OpenID Connect issuer for tests, on loopback: discovery document, JWKS, an
authorization endpoint that signs in a chosen user without a UI, a token endpoint
(authorization code, PKCE S256 or plain, client_secret_basic or client_secret_post), userinfo
and an end-session endpoint. ID and access tokens are RS256 JWTs signed with the current key.

Key rotation: :meth:`OidcIssuer.rotate_key` adds a new signing key and makes it current; the
JWKS keeps publishing the older ones until :meth:`retire_old_keys` (a relying party that
cached the old JWKS meets an unknown ``kid`` and must refetch).

Does: the protocol subset a login front (oauth2-proxy, mod_auth_openidc) and a JWT
validator need (OpenID Connect Core 1.0 §3.1, Discovery 1.0 §3-4, RFC 7636 PKCE, RFC 7517 JWKS).
Does not: consent, refresh tokens, dynamic registration, encryption, any UI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid=secrets.token_hex(8), private=key)

    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}  # fmt: skip


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list[str]


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    user: dict[str, Any]
    nonce: str | None
    challenge: str | None
    challenge_method: str
    expires: float


@dataclass
class OidcIssuer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    host: str = "127.0.0.1"
    port: int = 0
    token_ttl: int = 300
    clients: dict[str, Client] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # email -> extra claims
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.generate()])
    signed_in: str | None = None  # who /authorize signs in (a `login_hint` overrides it)
    requests: list[str] = field(default_factory=list)  # "METHOD /path" seen, for assertions
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # guards _grants, keys
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # -- set-up -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def register_client(self, client_id: str, redirect_uri: str) -> Client:
        client = Client(client_id, secrets.token_urlsafe(24), [redirect_uri])
        self.clients[client_id] = client
        return client

    def add_user(self, email: str, **claims: Any) -> None:
        self.users[email.lower()] = {"email": email, "email_verified": True, **claims}

    def sign_in_as(self, email: str | None) -> None:
        self.signed_in = email

    def rotate_key(self) -> SigningKey:
        """A new current signing key; the old ones stay in the JWKS."""
        key = SigningKey.generate()
        with self._lock:
            self.keys.append(key)
        return key

    def retire_old_keys(self) -> None:
        with self._lock:
            self.keys = self.keys[-1:]

    def start(self) -> OidcIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                issuer._handle(self, "GET")

            def do_POST(self) -> None:
                issuer._handle(self, "POST")

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="oidc-issuer")  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- tokens -----------------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        """OpenID Connect Discovery 1.0 §3."""
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "userinfo_endpoint": f"{self.url}/userinfo",
            "jwks_uri": f"{self.url}/jwks",
            "end_session_endpoint": f"{self.url}/logout",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256", "plain"],
            "claims_supported": ["sub", "email", "email_verified", "name", "groups"],
        }

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [k.jwk() for k in self.keys]}

    def sign(self, claims: dict[str, Any]) -> str:
        with self._lock:
            key = self.keys[-1]
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})

    def _claims(self, user: dict[str, Any], audience: str) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.url, "sub": user["email"].lower(), "aud": audience, "iat": now,
                "nbf": now, "exp": now + self.token_ttl, **user}  # fmt: skip

    # -- HTTP -------------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(req.path)
        self.requests.append(f"{method} {url.path}")
        query = dict(urllib.parse.parse_qsl(url.query))
        form: dict[str, str] = {}
        if method == "POST":
            length = int(req.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(req.rfile.read(length).decode()))
        routes = {
            ("GET", "/.well-known/openid-configuration"): lambda: (200, self.discovery()),
            ("GET", "/jwks"): lambda: (200, self.jwks()),
            ("GET", "/authorize"): lambda: self._authorize(req, query),
            ("POST", "/token"): lambda: self._token(req, form),
            ("GET", "/userinfo"): lambda: self._userinfo(req),
            ("GET", "/logout"): lambda: self._logout(req, query),
        }
        handler = routes.get((method, url.path))
        status, body = handler() if handler else (404, {"error": "not_found"})
        if status in (301, 302, 303):
            return  # the handler wrote the redirect
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Cache-Control", "no-store")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    @staticmethod
    def _redirect(req: BaseHTTPRequestHandler, location: str) -> tuple[int, dict[str, Any]]:
        req.send_response(302)
        req.send_header("Location", location)
        req.send_header("Content-Length", "0")
        req.end_headers()
        return 302, {}

    def _authorize(
        self, req: BaseHTTPRequestHandler, q: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        client = self.clients.get(q.get("client_id", ""))
        redirect_uri = q.get("redirect_uri", "")
        if client is None or redirect_uri not in client.redirect_uris:
            return 400, {"error": "invalid_request", "error_description": "unknown client"}
        state = {"state": q["state"]} if "state" in q else {}

        def back(params: dict[str, str]) -> tuple[int, dict[str, Any]]:
            sep = "&" if "?" in redirect_uri else "?"
            return self._redirect(req, redirect_uri + sep + urllib.parse.urlencode(params))

        if q.get("response_type") != "code" or "openid" not in q.get("scope", "").split():
            return back({"error": "unsupported_response_type", **state})
        who = (q.get("login_hint") or self.signed_in or "").lower()
        if who not in self.users:
            return back({"error": "login_required", **state})  # Core 1.0 §3.1.2.6
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._grants[code] = _Grant(client.client_id, redirect_uri, self.users[who],
                                        q.get("nonce"), q.get("code_challenge"),
                                        q.get("code_challenge_method", "plain"),
                                        time.monotonic() + 60)  # fmt: skip
        return back({"code": code, **state})

    def _client_of(self, req: BaseHTTPRequestHandler, form: dict[str, str]) -> Client | None:
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            raw = base64.b64decode(auth[6:]).decode()
            client_id, _, secret = raw.partition(":")
            client_id, secret = urllib.parse.unquote(client_id), urllib.parse.unquote(secret)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, secret):
            return None
        return client

    def _token(
        self, req: BaseHTTPRequestHandler, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        client = self._client_of(req, form)
        if client is None:
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            grant = self._grants.pop(form.get("code", ""), None)  # single use
        if (
            grant is None
            or grant.expires < time.monotonic()
            or grant.client_id != client.client_id
            or grant.redirect_uri != form.get("redirect_uri")
        ):
            return 400, {"error": "invalid_grant"}
        if grant.challenge is not None:  # RFC 7636 §4.6
            verifier = form.get("code_verifier", "")
            if grant.challenge_method == "S256":
                digest = hashlib.sha256(verifier.encode("ascii")).digest()
                computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
            else:
                computed = verifier
            if not secrets.compare_digest(computed, grant.challenge):
                return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        id_claims = self._claims(grant.user, client.client_id)
        if grant.nonce is not None:
            id_claims["nonce"] = grant.nonce
        access = self._claims(grant.user, self.url)
        return 200, {"access_token": self.sign(access), "token_type": "Bearer",
                     "expires_in": self.token_ttl, "id_token": self.sign(id_claims)}  # fmt: skip

    def _userinfo(self, req: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]]:
        auth = req.headers.get("Authorization", "")
        try:
            with self._lock:
                keys = {k.kid: k.private.public_key() for k in self.keys}
            kid = jwt.get_unverified_header(auth.removeprefix("Bearer "))["kid"]
            claims = jwt.decode(auth.removeprefix("Bearer "), keys[kid], algorithms=["RS256"],
                                audience=self.url, issuer=self.url)  # fmt: skip
        except (jwt.PyJWTError, KeyError):
            return 401, {"error": "invalid_token"}
        return 200, self.users.get(claims["sub"], {"sub": claims["sub"]}) | {"sub": claims["sub"]}

    def _logout(self, req: BaseHTTPRequestHandler, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        target = q.get("post_logout_redirect_uri")
        if target:
            return self._redirect(req, target)
        return 200, {"logged_out": True}
