"""The admin console from a test: sign in over plain HTTP (httpx), and Debian's chromium
driven by Playwright (never `playwright install`: the browser is the system package the
Makefile installs)."""

from __future__ import annotations

import re
import shutil
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, html[:2000]
    return found.group(1)


def sign_in(console_url: str, name: str, password: str) -> httpx.Client:
    """An httpx client holding a signed-in session cookie (the sign-in form's CSRF token
    taken from the form, as a browser does)."""
    client = httpx.Client(base_url=console_url.rstrip("/").removesuffix("/console"), timeout=30)
    form = client.get("/console/sign-in")
    reply = client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(form.text), "name": name, "password": password},
    )
    assert reply.status_code == 303, reply.text
    return client
