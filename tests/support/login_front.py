"""Apache httpd with mod_auth_openidc as an OIDC login front, for the browser SSO e2e test:
the site configuration is the ``apache`` block of docs/browser-sso.md, verbatim, wrapped in a
standalone server configuration (modules, one loopback Listen, pid and log files in the test's
directory). Started in the foreground as a child process, stopped by its PID."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

APACHE = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"
MODULE_NAMES = (
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_user_module", "mod_authz_user.so"),
    ("headers_module", "mod_headers.so"),
    ("proxy_module", "mod_proxy.so"),
    ("proxy_http_module", "mod_proxy_http.so"),
    ("auth_openidc_module", "mod_auth_openidc.so"),
)
SITE_RE = re.compile(r"^```apache\n(.*?)^```", re.MULTILINE | re.DOTALL)


def available() -> str | None:
    """None when Apache and mod_auth_openidc are installed, else what is missing."""
    if not Path(APACHE).exists():
        return "apache2 is not installed"
    if not (Path(MODULES) / "mod_auth_openidc.so").exists():
        return "libapache2-mod-auth-openidc is not installed"
    return None


def site_from_doc(doc: Path) -> str:
    """The site configuration docs/browser-sso.md shows (its first ``apache`` block)."""
    match = SITE_RE.search(doc.read_text())
    assert match, f"no ```apache block in {doc}"
    return match.group(1)


@dataclass
class LoginFront:
    directory: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_front(directory: Path, site: str, port: int, env: dict[str, str]) -> LoginFront:
    directory.mkdir(parents=True, exist_ok=True)
    modules = "\n".join(f"LoadModule {name} {MODULES}/{so}" for name, so in MODULE_NAMES)
    user = "" if os.geteuid() != 0 else "User www-data\nGroup www-data\n"
    conf = directory / "apache.conf"
    conf.write_text(
        f"ServerRoot {directory}\n{modules}\n{user}"
        f"Listen 127.0.0.1:{port}\nPidFile {directory}/apache.pid\n"
        f"ErrorLog {directory}/error.log\nLogLevel warn auth_openidc:info\n"
        "ServerName 127.0.0.1\nStartServers 1\nServerLimit 1\nThreadsPerChild 8\n"
        "MaxRequestWorkers 8\nMutex file:" + str(directory) + "\n"
        f"{site}"
    )
    full_env = {**os.environ, **env, "APACHE_RUN_DIR": str(directory)}
    proc = subprocess.Popen(
        [APACHE, "-f", str(conf), "-DFOREGROUND"], env=full_env, cwd=directory,
        stdin=subprocess.DEVNULL, stdout=open(directory / "stdout.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    front = LoginFront(directory, port, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = (directory / "stdout.log").read_text(errors="replace")
            raise AssertionError(f"apache exited ({proc.returncode}):\n{out}\n{front.error_log}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return front
        except OSError:
            time.sleep(0.1)
    front.stop()
    raise AssertionError(f"apache did not listen within 20 s:\n{front.error_log}")


def apache_version() -> str:
    out = subprocess.run([APACHE, "-v"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "?"
