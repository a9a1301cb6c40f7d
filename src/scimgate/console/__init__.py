"""The admin console: server-rendered pages over the use cases, under ``/console/``, on its
own listener (``console_bind``, loopback by default).

Does: sign-in with an admin credential (``scimgate admin create``), a session cookie
(HttpOnly, SameSite=Strict, Secure over TLS) and a CSRF token on every form; the roles
viewer (reads) and operator (reads, token rotation and revocation); pages rendered with
Jinja2 (autoescaped) and a little dependency-free JavaScript (``static/console.js``: the
person page polls a JSON endpoint); an inline SVG latency chart; CSV exports.
Does not: SQL, the store, HAProxy or the sync engine (it reads through ``scimgate.app``:
``app.admins``, ``app.console_views``, ``app.tokens``, ``app.reports``), or serving
(``instance.serve`` puts it on its listener).
"""

from scimgate.console.app import Console, build_console_app

__all__ = ["Console", "build_console_app"]
