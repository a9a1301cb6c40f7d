"""A small OIDC issuer on loopback for the key-rotation tests: a discovery document, a JWKS
(with an ETag and a Cache-Control max-age; 304 on If-None-Match), signing keys that are
published, signed with and withdrawn on demand, and tokens minted with any of them.

General on purpose (any test needing an issuer whose keys change can use it); it serves
plain http on 127.0.0.1, which scimgate accepts only because it is loopback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any  # rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            nums = public.public_numbers()
            return {"kty": "RSA", "use": "sig", "kid": self.kid, "alg": self.alg,
                    "n": _int_b64(nums.n), "e": _int_b64(nums.e)}  # fmt: skip
        enums = public.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[public.curve.name]
        size = (public.curve.key_size + 7) // 8
        return {"kty": "EC", "use": "sig", "kid": self.kid, "alg": self.alg, "crv": crv,
                "x": b64url(enums.x.to_bytes(size, "big")),
                "y": b64url(enums.y.to_bytes(size, "big"))}  # fmt: skip

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def new_key(kid: str, kind: str = "rsa2048") -> SigningKey:
    """``rsa2048``, ``rsa1024`` (too weak), ``rsa3072``, ``ec256``, ``ec384``, ``ec521``,
    ``ps256``, ``ps384``, ``ps512`` (an RSA 2048 key signing RSASSA-PSS)."""
    if kind.startswith("ps"):
        return SigningKey(kid, kind.upper(), rsa.generate_private_key(65537, 2048))
    if kind.startswith("rsa"):
        bits = int(kind[3:])
        return SigningKey(kid, "RS256", rsa.generate_private_key(65537, bits))
    curve = {"ec256": ec.SECP256R1(), "ec384": ec.SECP384R1(), "ec521": ec.SECP521R1()}[kind]
    alg = {"ec256": "ES256", "ec384": "ES384", "ec521": "ES512"}[kind]
    return SigningKey(kid, alg, ec.generate_private_key(curve))


class JwksIssuer:
    """``with JwksIssuer() as idp:`` serves ``idp.issuer`` until the block ends."""

    def __init__(self, *, max_age: int = 1, audience: str = "scimgate-test", port: int = 0) -> None:
        self.port = port  # 0: any free port
        self.max_age = max_age
        self.audience = audience
        self.keys: dict[str, SigningKey] = {}
        self.published: list[str] = []
        self.extra_jwks: list[dict[str, Any]] = []  # raw entries served as they are
        self.jwks_fetches = 0
        self.not_modified = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- keys

    def add_key(self, kid: str, kind: str = "rsa2048", *, publish: bool = True) -> SigningKey:
        key = new_key(kid, kind)
        with self._lock:
            self.keys[kid] = key
            if publish:
                self.published.append(kid)
        return key

    def withdraw(self, kid: str) -> None:
        with self._lock:
            self.published.remove(kid)

    def jwks(self) -> bytes:
        with self._lock:
            keys = [self.keys[k].jwk() for k in self.published] + list(self.extra_jwks)
        return json.dumps({"keys": keys}, sort_keys=True).encode()

    # ---- tokens

    def claims(self, identity: str, *, ttl: int = 600, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.issuer, "aud": self.audience, "email": identity,
                "sub": identity, "iat": now, "nbf": now, "exp": now + ttl, **extra}  # fmt: skip

    def mint(self, kid: str, identity: str, **claims: Any) -> str:
        key = self.keys[kid]
        return pyjwt.encode(
            self.claims(identity, **claims), key.private, algorithm=key.alg, headers={"kid": kid}
        )

    def forge(self, header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
        """A token built by hand: ``secret`` None gives an empty signature (``alg: none``),
        else HMAC-SHA256 with ``secret`` (the public-key-as-HMAC-secret confusion)."""
        head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
        if secret is None:
            return head + "."
        return head + "." + b64url(hmac.new(secret, head.encode(), hashlib.sha256).digest())

    # ---- HTTP

    @property
    def issuer(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> JwksIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    doc = {"issuer": issuer.issuer, "jwks_uri": issuer.issuer + "/keys",
                           "id_token_signing_alg_values_supported": ["RS256", "ES256"]}  # fmt: skip
                    self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})
                elif self.path == "/keys":
                    body = issuer.jwks()
                    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    cache = {"Cache-Control": f"public, max-age={issuer.max_age}", "ETag": etag}
                    with issuer._lock:
                        issuer.jwks_fetches += 1
                    if self.headers.get("If-None-Match") == etag:
                        with issuer._lock:
                            issuer.not_modified += 1
                        self._send(304, b"", cache)
                    else:
                        self._send(200, body, {"Content-Type": "application/json", **cache})
                else:
                    self._send(404, b"{}", {"Content-Type": "application/json"})

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
