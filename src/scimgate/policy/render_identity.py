"""Rendered rules, identity side: extract the caller's identity (JWT, trusted header, mTLS),
type-check a JWT's claims, cache verified tokens, turn the identity into its pseudonym key
and policy groups, and hand the identity to a backend in headers it can trust.

HAProxy 2.6.12 facts these rules rely on (measured on this machine with ``debug`` converters
and live requests; the regression tests are tests/integration/test_enforce_hardening.py):

``jwt_payload_query('$.c','int')`` and ``jwt_payload_query('$.c')`` per JSON type of ``c``:

==========================  =======================  ==========================
claim value                 ``...,'int')``           ``...)`` (no type)
==========================  =======================  ==========================
``1700000000``              sint 1700000000          str ``1.7e+09`` (``%g``)
``123`` / ``-5`` / ``0``    sint 123 / -5 / 0        str ``123`` / ``-5`` / ``0``
``1700000000.5``            sint 1700000000          str ``1.7e+09``
``1.7e9`` / ``17E+8``       sint 1 / 17 (strtoll)    str ``1.7e+09``
``010`` / ``0x10`` (bad)    sint 8 / 16 (base 0)     str ``10`` / ``0``
``17x`` (bad JSON)          sint 17                  str ``17``
>= 17 digits (> 2^53)       nothing                  str ``1.22222e+16``...
``"1700000000"``            **str** ``1700000000``   str ``1700000000``
``"text"``                  str ``text``             str ``text``
``true`` / ``false``        bool 1 / 0               bool 1 / 0
``null``, ``[...]``, ``{}`` nothing                  nothing (same as absent)
duplicate key               the first one            the first one
``"\\u0076"`` as key         not found (raw match)    not found
==========================  =======================  ==========================

So a string ``exp`` passed the old ``add()/sub()`` arithmetic (a string casts to its leading
digits), ``nbf: true`` counted as 1 (long past), and an array/object ``nbf`` looked absent.
Types are therefore checked on the token's decoded payload text (``field(2,.),ub64dec``,
the same base64url decoding): every ``"exp"``, ``"nbf"`` and ``"iat"`` key, anywhere and
however often, must hold a plain integer of 1-10 digits without a leading zero, and the
identity claim a string; anything else is 401. The regex uses possessive ``\\s*+`` (a plain
``\\s*`` backtracks into the lookahead and flags valid ``"exp" : 1`` spacing).

Other facts: ``http_auth_bearer`` reads the first of several ``Authorization`` headers, and
the first value of a comma-joined one; ``req.fhdr_cnt`` counts header lines (cheap), while
``req.hdr_cnt`` also counts comma-separated values by parsing every character of a ~700-byte
token (measured ~3,600 instructions per request with callgrind), so repeated lines are
counted with ``fhdr_cnt`` and a comma found with ``-m reg ,`` (a JWT never holds one). A JSON string's ``\\n`` decodes to a real LF, and ``\\u00fc`` to the
Latin-1 byte 0xFC.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scimgate.policy.compiler import (
    NOT_BEFORE_MARK,
    OVERLAY_MAP_NAME,
    OVERLAY_TOMBSTONE,
    map_file_name,
)
from scimgate.policy.jwks import KID_RE, PinnedKey
from scimgate.policy.model import FILE_PATH_RE, HMAC_ALGORITHMS, JWKS_ALGORITHMS, Policy
from scimgate.policy.render_agents import (
    DELEGATED_ACL,
    V_DELEGATE_GROUPS,
    agent_string_claims,
    agent_token_rules,
    agents_of,
    claims_ok_terms,
    identity_from_token,
)
from scimgate.policy.render_base import (
    PRINTABLE_TOKEN_REGEX,
    V_BEARER,
    V_GROUPS,
    V_HMAC,
    V_IDENTITY,
    V_KEY,
    V_SCOPES,
    RenderError,
    deny,
    require,
    resolved_file,
)

# The verified-token cache: a stick table in its own backend (a frontend holds one table at
# most, and the fragment's host frontend may already have one), filled through stick counter
# sc2 (the last one 2.6 has; the fragment notes reserve it).
JWT_CACHE_TABLE = "scimgate_jwt_cache"
JWT_CACHE_SC = 2

# Unknown kids (JWKS mode): a small table of its own, filled through sc2 too. A request
# records a miss only when its token fails (an unknown kid verifies nothing), and the cache
# stores only verified tokens, so the two never want sc2 in the same request. The kid's
# shape is KID_RE's (bounded length and charset), checked in HAProxy before it is tracked.
JWT_KID_MISS_TABLE = "scimgate_jwt_kid_miss"
JWT_KID_MISS_SC = 2
KID_MISS_TABLE_SIZE = 1000
KID_MISS_EXPIRE_SECONDS = 60
KID_SHAPE_REGEX = "^" + KID_RE.pattern.strip("^$") + "$"

# gpt0 is 32 bits: a later exp would be stored truncated (earlier, so never longer-lived)
MAX_EXP = 2**32 - 1
_TIME_CLAIM = "[1-9][0-9]{0,9}"


def claim_types_bad_regex(string_claims: list[str]) -> str:
    """Matches a decoded JWT payload whose time claims are not integers or whose
    ``string_claims`` (the identity claim; ``sub`` when act.sub is forwarded) not strings."""
    times = f'"(?:exp|nbf|iat)"\\s*+:\\s*+(?!{_TIME_CLAIM}\\s*[,}}])'
    strings = "|".join(sorted(set(string_claims)))
    return f'{times}|"(?:{strings})"\\s*+:\\s*+(?!")'


def _check_public_key(path: str) -> None:
    try:
        head = Path(path).read_text(encoding="ascii", errors="replace")[:4096]
    except OSError as exc:
        raise RenderError(f"JWT public key {path!r} cannot be read: {exc}") from None
    if "-----BEGIN CERTIFICATE-----" in head:
        raise RenderError(
            f"JWT public key {path!r} is a certificate: HAProxy 2.6 needs a "
            "'-----BEGIN PUBLIC KEY-----' PEM (with a certificate every token fails, silently)"
        )
    require(
        "-----BEGIN PUBLIC KEY-----" in head,
        f"JWT public key {path!r} is not a '-----BEGIN PUBLIC KEY-----' PEM",
    )


def _signature_rules(
    policy: Policy,
    check_files: bool,
    jwt_keys: Sequence[PinnedKey],
    *,
    cached: bool,
    claims_ok: str,
) -> tuple[list[str], str, list[str]]:
    """(the ``scimgate_jwt_sig_ok`` rules, the alg-allow-list ACL pattern, head comments).

    Static mode: one ``jwt_verify`` with the policy's algorithm and key. JWKS mode: the
    token's ``kid`` selects one key, whose algorithm is pinned as a literal (the token's
    ``alg`` must equal it, and is never passed to ``jwt_verify``); an unknown kid verifies
    nothing, so it is refused. The verification runs only once every claim check passed."""
    jwt = policy.identity.jwt
    assert jwt is not None
    bearer = f"var({V_BEARER})"
    if jwt.jwks is None:
        alg = jwt.algorithm
        assert alg is not None
        if alg in HMAC_ALGORITHMS:
            assert jwt.secret is not None
            key = jwt.secret
        else:
            assert jwt.public_key is not None
            key = resolved_file(policy, jwt.public_key, "JWT public key", check_files)
            if check_files:
                _check_public_key(key)
        return (
            [f'acl scimgate_jwt_sig_ok {bearer},jwt_verify("{alg}","{key}") -m int 1'],
            alg,
            [f"# identity: JWT bearer. The algorithm is pinned to the literal {alg} (never the"],
        )
    when = f"!scimgate_jwt_cached {claims_ok}" if cached else claims_ok
    rules = [
        "# the key is chosen by the token's kid; each key's algorithm is pinned (from the JWKS)",
        f"http-request set-var(txn.scimgate_jwt_kid) {bearer},jwt_header_query('$.kid')"
        + (" if !scimgate_jwt_cached" if cached else ""),
    ]
    if not jwt_keys:
        rules.append("# no key fetched yet: every token is refused (401)")
    for pinned in jwt_keys:
        kid, pinned_alg, path = pinned.kid, pinned.alg, pinned.path
        require(bool(KID_RE.fullmatch(kid)), f"unusable kid {kid!r}")
        require(pinned_alg in JWKS_ALGORITHMS, f"unusable algorithm {pinned_alg!r}")
        require(bool(FILE_PATH_RE.fullmatch(path)), f"unusable key path {path!r}")
        if not pinned.verifiable:
            # (HAProxy 2.6 refuses the whole config with a PS* jwt_verify; its tokens are 401)
            rules.append(f"# key {kid} ({pinned_alg}) left out: this HAProxy cannot verify it")
            continue
        if check_files:
            _check_public_key(path)
        rules.append(
            f'http-request set-var(txn.scimgate_jwt_sig) {bearer},jwt_verify("{pinned_alg}","{path}")'
            f" if {when} {{ var(txn.scimgate_jwt_kid) -m str -- {kid} }}"
            f" {{ var(txn.scimgate_jwt_alg) -m str {pinned_alg} }}"
        )
    rules += _kid_miss_rules(
        policy, jwt_keys, when.replace("scimgate_jwt_alg_ok", "scimgate_jwt_alg_listed")
    )
    rules.append("acl scimgate_jwt_sig_ok var(txn.scimgate_jwt_sig) -m int 1")
    # no key: a pattern no signing algorithm has (an empty or "-" pattern is a config error)
    algs = " ".join(sorted({k.alg for k in jwt_keys if k.verifiable})) or "no-key-fetched"
    return (
        rules,
        algs,
        ["# identity: JWT bearer, keys from the issuer's JWKS. Each algorithm is pinned (never"],
    )


def _kid_miss_rules(policy: Policy, jwt_keys: Sequence[PinnedKey], when: str) -> list[str]:
    """Record a token's unknown ``kid`` in :data:`JWT_KID_MISS_TABLE` (HAProxy cannot fetch a
    JWKS; scimgate's follower reads the table and fetches at once, rate-limited).

    Recorded only when every claim check passes (with the token's alg among the algorithms
    the JWKS may bring, not only the held ones: a new key may bring a new one), the kid has
    the shape a JWKS kid may have (1-128 of ``KID_RE``'s characters, so a client never writes
    other bytes into the table), matches no held key, and sc2 is free. The table has a fixed
    size and expiry: a flood of random kids evicts entries, it never grows memory."""
    jwt = policy.identity.jwt
    assert jwt is not None and jwt.jwks is not None
    if not jwt.jwks.refresh_on_unknown_kid:
        return []
    sc = JWT_KID_MISS_SC
    known = " ".join(sorted({k.kid for k in jwt_keys}))
    record = f"{when} scimgate_jwt_kid_shape" + (" !scimgate_jwt_kid_known" if known else "")
    return [
        "# a kid no held key has, on a token whose claims pass: recorded for scimgate, which",
        "# then fetches the JWKS at once (an IdP may sign with a key it has just published)",
        f"acl scimgate_jwt_kid_shape var(txn.scimgate_jwt_kid) -m reg '{KID_SHAPE_REGEX}'",
        *(
            [f"acl scimgate_jwt_kid_known var(txn.scimgate_jwt_kid) -m str -- {known}"]
            if known
            else []
        ),
        f"acl scimgate_jwt_alg_listed var(txn.scimgate_jwt_alg) -m str {' '.join(jwt.jwks.algorithms)}",
        f"http-request track-sc{sc} var(txn.scimgate_jwt_kid) table {JWT_KID_MISS_TABLE} "
        f"if {record} !{{ sc_tracked({sc}) }}",
    ]


def jwt_kid_miss_table(policy: Policy) -> str | None:
    """The unknown-kid table's ``stick-table`` line (JWKS mode with refresh_on_unknown_kid)."""
    jwt = policy.identity.jwt
    if policy.identity.source != "jwt" or jwt is None or jwt.jwks is None:
        return None
    if not jwt.jwks.refresh_on_unknown_kid:
        return None
    return (
        f"stick-table type string len 128 size {KID_MISS_TABLE_SIZE} "
        f"expire {KID_MISS_EXPIRE_SECONDS}s store http_req_cnt"
    )


def jwt_rules(policy: Policy, check_files: bool, jwt_keys: Sequence[PinnedKey] = ()) -> list[str]:
    jwt = policy.identity.jwt
    assert jwt is not None
    leeway = jwt.leeway_seconds
    bearer = f"var({V_BEARER})"
    forwards_actor = policy.identity_headers.actor is not None and _has_gated_backend(policy)
    claims_ok = (
        "scimgate_jwt_alg_ok scimgate_jwt_payload_ok !scimgate_jwt_claim_types_bad "
        "scimgate_jwt_exp_sane scimgate_jwt_exp_ok !scimgate_jwt_nbf_bad scimgate_jwt_iss_ok "
        "scimgate_jwt_aud_ok scimgate_jwt_identity_ok"
        + (" !scimgate_jwt_act_bad" if forwards_actor else "")
    )
    claims_ok = claims_ok_terms(policy, claims_ok)  # agents: a principal, not the user claim
    # the claim is read on every request (a cache hit needs it too), and becomes the identity
    # only once the token is verified or cached
    identity = f"http-request set-var({V_IDENTITY}) var(txn.scimgate_jwt_identity)"
    cached = jwt.verified_cache.enabled
    # With the cache, the claims are decoded only on a miss (a hit re-checks exp, from the entry).
    unless_cached = " if !scimgate_jwt_cached" if cached else ""
    signature, algs, title = _signature_rules(
        policy, check_files, jwt_keys, cached=cached, claims_ok=claims_ok
    )
    head = [
        *title,
        "# token's own 'alg': alg-confusion); jwt_verify checks only the signature, so",
        f"# exp / nbf / iss / aud are checked here (leeway {leeway} s). Signature check runs last.",
        f"http-request set-var({V_BEARER}) http_auth_bearer",
        "# one credential only: http_auth_bearer would read the first of two headers, or the",
        "# first of a comma-joined list (a JWT holds no comma)",
        "acl scimgate_auth_repeated req.fhdr_cnt(authorization) gt 1",
        "acl scimgate_auth_repeated req.fhdr(authorization) -m reg ,",
        *deny(401, "ambiguous_credentials", "scimgate_auth_repeated", bearer=True),
        "http-request set-var(txn.scimgate_now) date",
    ]
    checks = [
        f"http-request set-var(txn.scimgate_jwt_alg) {bearer},jwt_header_query('$.alg'){unless_cached}",
        "# claim types, on the decoded payload text: jwt_payload_query reads a string exp as",
        "# its digits and an array or object nbf as absent (table in render_identity.py)",
        f"http-request set-var(txn.scimgate_jwt_payload) {bearer},field(2,.),ub64dec{unless_cached}",
        f"http-request set-var(txn.scimgate_jwt_exp) {bearer},jwt_payload_query('$.exp','int'){unless_cached}",
        f"http-request set-var(txn.scimgate_jwt_nbf) {bearer},jwt_payload_query('$.nbf','int'){unless_cached}",
        f"http-request set-var(txn.scimgate_jwt_iss) {bearer},jwt_payload_query('$.iss'){unless_cached}",
        f"http-request set-var(txn.scimgate_jwt_aud) {bearer},jwt_payload_query('$.aud'){unless_cached}",
        f"http-request set-var(txn.scimgate_jwt_identity) {bearer},jwt_payload_query('$.{jwt.claim}')",
        *(
            # read on every request, cache hits too: the cut-off compares it after the lookup
            [
                f"http-request set-var(txn.scimgate_jwt_iat) {bearer},jwt_payload_query('$.iat','int')"
            ]
            if jwt.cutoff
            else []
        ),
        "acl scimgate_jwt_identity_ok var(txn.scimgate_jwt_identity) "
        f"-m reg '{PRINTABLE_TOKEN_REGEX}'",
        f"acl scimgate_jwt_alg_ok var(txn.scimgate_jwt_alg) -m str {algs}",
        "acl scimgate_jwt_payload_ok var(txn.scimgate_jwt_payload) -m found",
        "acl scimgate_jwt_claim_types_bad var(txn.scimgate_jwt_payload) "
        f"-m reg '{claim_types_bad_regex([jwt.claim, *(['sub'] if forwards_actor else []), *agent_string_claims(policy)])}'",
        f"acl scimgate_jwt_exp_sane var(txn.scimgate_jwt_exp) -m int le {MAX_EXP}",
        f"acl scimgate_jwt_exp_ok var(txn.scimgate_jwt_exp),add({leeway}),sub(txn.scimgate_now) -m int gt 0",
        f"acl scimgate_jwt_nbf_bad var(txn.scimgate_jwt_nbf),sub(txn.scimgate_now) -m int gt {leeway}",
        f"acl scimgate_jwt_iss_ok var(txn.scimgate_jwt_iss) -m str '{jwt.issuer}'",
        f"acl scimgate_jwt_aud_ok var(txn.scimgate_jwt_aud) -m str '{jwt.audience}'",
    ]
    if forwards_actor:
        checks += [
            "# RFC 8693 'act' (the agent acting for the user): forwarded as the actor, so a",
            "# token with an 'act' whose 'sub' is not one printable token is refused",
            f"http-request set-var(txn.scimgate_actor) {bearer},jwt_payload_query('$.act.sub'){unless_cached}",
            "acl scimgate_jwt_has_act var(txn.scimgate_jwt_payload) -m reg '\"act\"\\s*+:'",
            f"acl scimgate_actor_ok var(txn.scimgate_actor) -m reg '{PRINTABLE_TOKEN_REGEX}'",
            "http-request set-var(txn.scimgate_jwt_act_bad) bool(1) "
            f"if scimgate_jwt_has_act !scimgate_actor_ok{' !scimgate_jwt_cached' if cached else ''}",
            "acl scimgate_jwt_act_bad var(txn.scimgate_jwt_act_bad) -m bool",
        ]
    # the agent rules define the principal ACL that claims_ok (in the signature rules) tests
    checks += agent_token_rules(policy, unless_cached)
    checks += signature
    if not cached:
        return [
            *head,
            *checks,
            *identity_from_token(policy, identity, f"{claims_ok} scimgate_jwt_sig_ok"),
        ]
    sc = JWT_CACHE_SC
    store = "{ var(txn.scimgate_jwt_store) -m bool }"
    return [
        *head,
        "# verified-token cache, looked up first: key = SHA-256 of the WHOLE bearer token (the",
        "# bytes jwt_verify checks); gpt0 = the token's exp. An entry is created only after",
        "# jwt_verify and every claim check (types included) accepted those exact bytes. A hit",
        "# skips the signature and the claim decodes (the same bytes carry the same alg, iss,",
        "# aud, nbf and types, and a config change restarts the table) but still re-checks",
        f"# exp, from the entry, on every request. Entries live {jwt.verified_cache.ttl_seconds} s.",
        f"http-request set-var(txn.scimgate_jwt_digest) {bearer},sha2(256)",
        "http-request set-var(txn.scimgate_jwt_cached_exp) "
        f"var(txn.scimgate_jwt_digest),table_gpt0({JWT_CACHE_TABLE})",
        "acl scimgate_jwt_cache_fresh var(txn.scimgate_jwt_cached_exp),"
        f"add({leeway}),sub(txn.scimgate_now) -m int gt 0",
        "http-request set-var(txn.scimgate_jwt_cached) bool(1) if scimgate_jwt_cache_fresh",
        "# the hit as a boolean: the rules below test it often, the arithmetic runs once",
        "acl scimgate_jwt_cached var(txn.scimgate_jwt_cached) -m bool",
        *checks,
        "http-request set-var(txn.scimgate_jwt_verified) bool(1) "
        f"if !scimgate_jwt_cached {claims_ok} scimgate_jwt_sig_ok",
        "acl scimgate_jwt_verified var(txn.scimgate_jwt_verified) -m bool",
        f"# store: only a freshly verified token, and only if sc{sc} is free (so sc-set-gpt0 can",
        f"# only ever mark the entry this request just tracked in {JWT_CACHE_TABLE})",
        "http-request set-var(txn.scimgate_jwt_store) bool(1) "
        f"if scimgate_jwt_verified !{{ sc_tracked({sc}) }}",
        f"http-request track-sc{sc} var(txn.scimgate_jwt_digest) table {JWT_CACHE_TABLE} "
        f"if {store}",
        f"http-request sc-set-gpt0({sc}) var(txn.scimgate_jwt_exp) if {store}",
        *identity_from_token(policy, identity, "scimgate_jwt_cached || scimgate_jwt_verified"),
    ]


def jwt_cache_table(policy: Policy) -> str | None:
    """The cache's ``stick-table`` line, or None when there is no verified-token cache."""
    jwt = policy.identity.jwt
    if policy.identity.source != "jwt" or jwt is None or not jwt.verified_cache.enabled:
        return None
    cache = jwt.verified_cache
    return (
        f"stick-table type binary len 32 size {cache.size} expire {cache.ttl_seconds}s store gpt0"
    )


def _header_rules(policy: Policy) -> list[str]:
    header = policy.identity.header
    assert header is not None
    name = header.name
    # (copies from untrusted sources were removed with the request's first rules)
    return [
        f"# identity: header {name}, honoured only from trusted sources; read whole",
        "# (req.fhdr, no comma splitting) and refused when repeated or comma-separated.",
        f"http-request set-var({V_IDENTITY}) req.fhdr({name}) if {{ req.hdr_cnt({name}) eq 1 }}",
    ]


def _mtls_rules(policy: Policy) -> list[str]:
    mtls = policy.identity.mtls
    assert mtls is not None
    entry = "CN" if mtls.field == "subject_cn" else "emailAddress"
    return [
        f"# identity: verified client certificate, subject {entry} (HAProxy 2.6 has no SAN fetch)",
        f"http-request set-var({V_IDENTITY}) ssl_c_s_dn({entry}) "
        "if { ssl_c_used } { ssl_c_verify -m int eq 0 }",
    ]


def identity_rules(
    policy: Policy, check_files: bool, jwt_keys: Sequence[PinnedKey] = ()
) -> list[str]:
    """Extract the identity; 401 unless it is one printable ASCII token."""
    source = policy.identity.source
    if source == "jwt":
        out = jwt_rules(policy, check_files, jwt_keys)
    elif source == "header":
        out = _header_rules(policy)
    else:
        out = _mtls_rules(policy)
    return [
        *out,
        "# identities are printable ASCII without spaces (2.6 decodes JSON \\u escapes to Latin-1)",
        f"acl scimgate_identity_ok var({V_IDENTITY}) -m reg '{PRINTABLE_TOKEN_REGEX}'",
        *deny(401, "unauthenticated", "!scimgate_identity_ok", bearer=source == "jwt"),
    ]


def lookup_rules(map_dir: str, shards: int) -> list[str]:
    """Pseudonym key -> policy groups; 403 when absent (unknown or deprovisioned)."""
    out = [
        "# --- scimgate: pseudonym key -> policy groups (absent = unknown or deprovisioned) ---",
        f"http-request set-var({V_KEY}) var({V_IDENTITY}),lower,hmac(sha256,{V_HMAC}),hex",
    ]
    # The overlay first, and a shard only where it has no entry. This order is what makes
    # the engine's "shard first, then remove the overlay entry" safe for a request that
    # runs between the two: it sees the overlay's entry or, once gone, the updated shard.
    overlay = f"{map_dir}/{OVERLAY_MAP_NAME}"
    out += [
        "# the overlay: recent changes, ahead of the shards (an entry wins; the tombstone",
        f"# '{OVERLAY_TOMBSTONE}' means deprovisioned); small, so updates there never stall",
        f"http-request set-var({V_GROUPS}) var({V_KEY}),map({overlay})",
    ]
    if shards == 1:
        path = f"{map_dir}/{map_file_name(0, 1)}"
        out.append(
            f"http-request set-var({V_GROUPS}) var({V_KEY}),map({path}) "
            f"if !{{ var({V_GROUPS}) -m found }}"
        )
    else:
        width = 1 if shards == 16 else 2
        for shard in range(shards):
            path = f"{map_dir}/{map_file_name(shard, shards)}"
            out.append(
                f"http-request set-var({V_GROUPS}) var({V_KEY}),map({path}) "
                f"if {{ var({V_KEY}) -m beg {shard:0{width}X} }} !{{ var({V_GROUPS}) -m found }}"
            )
    return [
        *out,
        f"acl scimgate_known var({V_GROUPS}) -m beg ,",
        *deny(403, "unknown_identity", "!scimgate_known"),
    ]


def cutoff_rules(policy: Policy) -> list[str]:
    """Token cut-off: the map value ``,groups,@<not-before>`` of an identity deprovisioned
    before is split in two, and a token issued (iat) before that time, or without iat, is
    refused (401: the client must fetch a new token). An agent's token (its ``agent:<claim>``
    entry) is treated the same; a delegated token is also cut off by the acting agent's
    not-before (``act.sub``'s entry): a token minted for the agent's earlier life stays out."""
    jwt = policy.identity.jwt
    if policy.identity.source != "jwt" or jwt is None or not jwt.cutoff:
        return []
    mark = NOT_BEFORE_MARK
    has_mark = f"{{ var({V_GROUPS}) -m sub {mark} }}"
    out = [
        "",
        "# --- scimgate: token cut-off (a token issued before the identity's last",
        "# deprovisioning stays refused after a reprovisioning; a token without iat too) ---",
        f"http-request set-var(txn.scimgate_not_before) var({V_GROUPS}),field(2,{mark}) if {has_mark}",
        f"http-request set-var({V_GROUPS}) var({V_GROUPS}),field(1,{mark}) if {has_mark}",
        "http-request set-var(txn.scimgate_iat_margin) var(txn.scimgate_jwt_iat),"
        "sub(txn.scimgate_not_before) if { var(txn.scimgate_not_before) -m found } "
        "{ var(txn.scimgate_jwt_iat) -m found }",
        "acl scimgate_token_cut_off var(txn.scimgate_iat_margin) -m int lt 0",
    ]
    agents = agents_of(policy)
    if agents is not None and agents.delegation:
        acting = f"{DELEGATED_ACL} {{ var({V_DELEGATE_GROUPS}) -m sub {mark} }}"
        out += [
            "# the acting agent's own not-before (RFC 8693 act.sub), against the same iat",
            "http-request set-var(txn.scimgate_delegate_not_before) "
            f"var({V_DELEGATE_GROUPS}),field(2,{mark}) if {acting}",
            f"http-request set-var({V_DELEGATE_GROUPS}) var({V_DELEGATE_GROUPS}),field(1,{mark}) "
            f"if {acting}",
            "http-request set-var(txn.scimgate_delegate_iat_margin) var(txn.scimgate_jwt_iat),"
            "sub(txn.scimgate_delegate_not_before) "
            "if { var(txn.scimgate_delegate_not_before) -m found } "
            "{ var(txn.scimgate_jwt_iat) -m found }",
            "acl scimgate_token_cut_off var(txn.scimgate_delegate_iat_margin) -m int lt 0",
        ]
    return [
        *out,
        "acl scimgate_jwt_has_iat var(txn.scimgate_jwt_iat) -m found",
        *deny(
            401,
            "token_cut_off",
            "!scimgate_jwt_has_iat || scimgate_token_cut_off",
            bearer=True,
        ),
    ]


def required_scopes(policy: Policy) -> list[str]:
    """Every scope some route requires, sorted (their index names their ACL)."""
    return sorted({s for r in policy.routes for s in r.require_scopes})


def scope_held(policy: Policy, scope: str) -> str:
    """The condition "the token holds ``scope``" for a route's deny rule."""
    jwt = policy.identity.jwt
    assert jwt is not None
    if jwt.scope_claim_format == "array":
        return f"scimgate_scope_held_{required_scopes(policy).index(scope)}"
    return f"{{ var({V_SCOPES}) -m sub ' {scope} ' }}"


def _array_scope_rules(policy: Policy) -> list[str]:
    jwt = policy.identity.jwt
    assert jwt is not None
    claim, items = jwt.scope_claim, jwt.scope_array_max_items
    out = [
        "",
        f"# --- scimgate: scopes ('{claim}' claim, a JSON array as Okta sends it): HAProxy 2.6",
        f"# reads no array whole, but each item by index ('$.{claim}[0]'; 3.0 too): the first",
        f"# {items} items are read, and a scope is held when one of them is exactly it ---",
    ]
    out += [
        f"http-request set-var(txn.scimgate_scp_{i}) var({V_BEARER}),"
        f"jwt_payload_query('$.{claim}[{i}]')"
        for i in range(items)
    ]
    for k, scope in enumerate(required_scopes(policy)):
        out += [
            f"acl scimgate_scope_held_{k} var(txn.scimgate_scp_{i}) -m str {scope}"
            for i in range(items)
        ]
    return out


def scope_rules(policy: Policy) -> list[str]:
    """The scope claim, space-wrapped for whole-word matching (only when a route needs it)."""
    if not any(r.require_scopes for r in policy.routes):
        return []
    jwt = policy.identity.jwt
    assert jwt is not None
    if jwt.scope_claim_format == "array":
        return _array_scope_rules(policy)
    return [
        "",
        f"# --- scimgate: scopes ('{jwt.scope_claim}' claim, space-separated), space-wrapped for whole-word matching ---",
        f"http-request set-var(txn.scimgate_jwt_scope) var({V_BEARER}),jwt_payload_query('$.{jwt.scope_claim}')",
        f'http-request set-var-fmt({V_SCOPES}) " %[var(txn.scimgate_jwt_scope)] "',
    ]


def _has_gated_backend(policy: Policy) -> bool:
    return any(not r.is_open and r.to.backend is not None for r in policy.routes)


def forwarded_identity_rules(policy: Policy) -> list[str]:
    """The caller's identity in headers for an identity-gated route's backend (set last, once
    allowed; client copies were removed first, so a header's absence is trustworthy too)."""
    gated = [r.name for r in policy.routes if not r.is_open and r.to.backend is not None]
    if not gated:
        return []
    names = policy.identity_headers
    jwt = policy.identity.jwt
    when = "scimgate_to_gated_backend"
    out = [
        "",
        "# --- scimgate: the caller's identity, for identity-gated backends only ---",
        f"acl {when} var(txn.scimgate_route) -m str {' '.join(gated)}",
    ]
    if names.user is not None:
        out.append(f"http-request set-header {names.user} %[var({V_IDENTITY})] if {when}")
    if names.email is not None:
        by_identity = (
            policy.identity.source == "jwt" and jwt is not None and jwt.claim == "email"
        ) or (
            policy.identity.source == "mtls"
            and policy.identity.mtls is not None
            and policy.identity.mtls.field == "subject_email"
        )
        if by_identity:
            out.append(f"http-request set-header {names.email} %[var({V_IDENTITY})] if {when}")
        elif policy.identity.source == "jwt":
            out += [
                f"http-request set-var(txn.scimgate_email) var({V_BEARER}),jwt_payload_query('$.email') if {when}",
                f"acl scimgate_email_ok var(txn.scimgate_email) -m reg '{PRINTABLE_TOKEN_REGEX}'",
                f"http-request set-header {names.email} %[var(txn.scimgate_email)] if {when} scimgate_email_ok",
            ]
    if names.actor is not None and policy.identity.source == "jwt":
        out += [
            f"http-request set-var(txn.scimgate_actor) var({V_BEARER}),jwt_payload_query('$.act.sub') if {when}",
            f"http-request set-header {names.actor} %[var(txn.scimgate_actor)] if {when} scimgate_actor_ok",
        ]
    if names.groups is not None:
        out += [
            "# the policy groups without the map value's wrapping commas: 'admins,sre' ('' = none)",
            f'http-request set-header {names.groups} "%[var({V_GROUPS}),regsub(\\"^,|,\\$\\",\\"\\",g)]" if {when}',
        ]
    return out
