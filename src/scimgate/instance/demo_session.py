"""`make demo`: start `scimgate up --dir DIR`, prove the enforcement loop once, print a
copy-paste curl session, then stay in the foreground until Ctrl-C.

    python -m scimgate.instance.demo_session --dir demo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
AGENT_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Agent"
DEMO_USER = "alice@example.com"
CHECK_USER = "demo-check@example.com"
CHECK_OWNER = "demo-agent-owner@example.com"
CHECK_AGENT = "demo-check-bot"
DEMO_AGENT = "ci-bot"


class DemoFailed(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# HTTP (stdlib only: the demo needs nothing beyond the package itself)


def http(method: str, url: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", SCIM_JSON)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


class Stack:
    """What `scimgate up` wrote to stack.json, plus the SCIM calls the demo makes."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.scim = str(info["scim_url"])
        self.token = str(info["token"])
        self.web = str(info["haproxy_url"])
        # The IdP's way in: HAProxy's TLS frontend (absent when scim_front is switched off).
        self.public = str(info["scim_public_url"]) if info.get("scim_public_url") else None
        self.ca_file = str(info["scim_ca_file"]) if info.get("scim_ca_file") else None

    def scim_call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http(method, self.scim + path, token=self.token, body=body)

    def find(self, kind: str, attr: str, value: str) -> dict[str, Any] | None:
        query = urllib.parse.quote(f'{attr} eq "{value}"')
        status, body = self.scim_call("GET", f"/{kind}?filter={query}")
        if status != 200:
            raise DemoFailed(f"GET /{kind} -> {status}: {body}")
        found = body.get("Resources") or []
        return found[0] if found else None

    def ensure_group(self, name: str) -> str:
        group = self.find("Groups", "displayName", name)
        if group is not None:
            return str(group["id"])
        status, body = self.scim_call(
            "POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": name}
        )
        if status != 201:
            raise DemoFailed(f"POST /Groups {name} -> {status}: {body}")
        return str(body["id"])

    def delete_user(self, user_name: str) -> None:
        user = self.find("Users", "userName", user_name)
        if user is not None:
            self.scim_call("DELETE", f"/Users/{user['id']}")

    def web_status(self, path: str, jwt: str) -> int:
        return http("GET", self.web + path, token=jwt)[0]


def user_body(user_name: str) -> dict[str, Any]:
    return {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "emails": [{"value": user_name, "primary": True}],
        "active": True,
    }


def add_member_body(user_id: str) -> dict[str, Any]:
    return {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
    }


DEACTIVATE_BODY = {
    "schemas": [PATCH_SCHEMA],
    "Operations": [{"op": "replace", "path": "active", "value": False}],
}


# ---------------------------------------------------------------------------------------------


def scimgate_command() -> list[str]:
    """How to call `scimgate` from this shell: the venv's script, relative when it can be."""
    script = Path(sys.executable).with_name("scimgate")
    if not script.exists():
        return [sys.executable, "-m", "scimgate.cli"]
    with contextlib.suppress(ValueError):
        return [str(script.relative_to(Path.cwd()))]
    return [str(script)]


def mint(directory: Path, *subject: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "scimgate.cli", "jwt", "mint", "--dir", str(directory), *subject],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def self_check(stack: Stack, directory: Path, admins_id: str) -> list[tuple[str, int, int]]:
    """Run the scenario once with a throwaway user: (step, expected, observed) per step."""
    stack.delete_user(CHECK_USER)
    steps: list[tuple[str, int, int]] = []
    status, body = stack.scim_call("POST", "/Users", user_body(CHECK_USER))
    if status != 201:
        raise DemoFailed(f"POST /Users -> {status}: {body}")
    user_id = str(body["id"])
    try:
        jwt = mint(directory, CHECK_USER)
        steps.append(("GET /       (active user)", 200, stack.web_status("/", jwt)))
        steps.append(("GET /admin  (not an admin)", 403, stack.web_status("/admin", jwt)))
        stack.scim_call("PATCH", f"/Groups/{admins_id}", add_member_body(user_id))
        steps.append(("GET /admin  (added to Admins)", 200, stack.web_status("/admin", jwt)))
        stack.scim_call("PATCH", f"/Users/{user_id}", DEACTIVATE_BODY)
        steps.append(("GET /admin  (deactivated)", 403, stack.web_status("/admin", jwt)))
        steps.append(("GET /       (deactivated)", 403, stack.web_status("/", jwt)))
        steps.append(("GET /       (no token)", 401, http("GET", stack.web + "/")[0]))
    finally:
        stack.scim_call("DELETE", f"/Users/{user_id}")
    return steps + agent_check(stack, directory)


REACTIVATE_BODY = {
    "schemas": [PATCH_SCHEMA],
    "Operations": [{"op": "replace", "path": "active", "value": True}],
}


def agent_check(stack: Stack, directory: Path) -> list[tuple[str, int, int]]:
    """An agent owned by a throwaway user, in Automation: allowed on /api, refused on a
    people-only route, suspended while its owner is deactivated (docs/agents.md)."""
    stack.delete_user(CHECK_OWNER)
    old = stack.find("Agents", "subject", CHECK_AGENT)
    if old is not None:
        stack.scim_call("DELETE", f"/Agents/{old['id']}")
    automation_id = stack.ensure_group("Automation")
    status, body = stack.scim_call("POST", "/Users", user_body(CHECK_OWNER))
    if status != 201:
        raise DemoFailed(f"POST /Users -> {status}: {body}")
    owner_id = str(body["id"])
    agent_id = None
    steps: list[tuple[str, int, int]] = []
    try:
        status, body = stack.scim_call("POST", "/Agents", agent_body(CHECK_AGENT, owner_id))
        if status != 201:
            raise DemoFailed(f"POST /Agents -> {status}: {body}")
        agent_id = str(body["id"])
        stack.scim_call("PATCH", f"/Groups/{automation_id}", add_member_body(agent_id))
        jwt = mint(directory, "--agent", CHECK_AGENT)
        steps.append(("GET /api    (agent, Automation)", 200, stack.web_status("/api", jwt)))
        steps.append(("GET /eng    (agent, people only)", 403, stack.web_status("/eng", jwt)))
        stack.scim_call("PATCH", f"/Users/{owner_id}", DEACTIVATE_BODY)
        steps.append(("GET /api    (owner deactivated)", 403, stack.web_status("/api", jwt)))
        stack.scim_call("PATCH", f"/Users/{owner_id}", REACTIVATE_BODY)
        steps.append(("GET /api    (owner back)", 200, stack.web_status("/api", jwt)))
    finally:
        if agent_id is not None:
            stack.scim_call("DELETE", f"/Agents/{agent_id}")
        stack.scim_call("DELETE", f"/Users/{owner_id}")
    return steps


def agent_body(subject: str, owner_id: str) -> dict[str, Any]:
    return {
        "schemas": [AGENT_SCHEMA],
        "name": subject,
        "subject": subject,
        "agentType": "autonomous",
        "owners": [{"value": owner_id}],
    }


def curl_session(stack: Stack, directory: Path, admins_id: str) -> str:
    cmd = shlex.join([*scimgate_command(), "jwt", "mint", "--dir", str(directory), DEMO_USER])
    token_file = shlex.quote(str(stack.info.get("token_file") or directory / "token"))
    user = json.dumps(user_body(DEMO_USER), separators=(",", ":"))
    add = json.dumps(add_member_body("USER_ID"), separators=(",", ":"))
    add = add.replace('"USER_ID"', "\"'$USER_ID'\"")
    deact = json.dumps(DEACTIVATE_BODY, separators=(",", ":"))
    get_id = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])'"
    agent_cmd = shlex.join(
        [*scimgate_command(), "jwt", "mint", "--dir", str(directory), "--agent", DEMO_AGENT]
    )
    bob = json.dumps(user_body("bob@example.com"), separators=(",", ":"))
    agent = json.dumps(agent_body(DEMO_AGENT, "BOB_ID"), separators=(",", ":"))
    agent = agent.replace('"BOB_ID"', "\"'$BOB'\"")
    add_agent = json.dumps(add_member_body("AGENT_ID"), separators=(",", ":"))
    add_agent = add_agent.replace('"AGENT_ID"', "\"'$AGENT_ID'\"")
    # The session talks SCIM as an IdP would: over TLS, through HAProxy.
    scim = stack.public or stack.scim
    cacert = f"--cacert {shlex.quote(stack.ca_file)} " if stack.public and stack.ca_file else ""
    return f"""\
# SCIM over TLS through HAProxy, as the IdP reaches it (the direct port {stack.scim}
# is for local tools on this machine)
SCIM={scim}; WEB={stack.web}; TOKEN=$(cat {token_file})
H=({cacert}-H "Authorization: Bearer $TOKEN" -H "Content-Type: {SCIM_JSON}")
status() {{ curl -s -o /dev/null -w "$1 -> %{{http_code}}\\n" -H "Authorization: Bearer $JWT" "$WEB$1"; }}

# 1. the IdP creates {DEMO_USER}; she signs in and gets a JWT
USER_ID=$(curl -s "${{H[@]}}" -X POST "$SCIM/Users" -d '{user}' | {get_id})
JWT=$({cmd})
status /         # 200: any active user
status /admin    # 403: not in Admins

# 2. the IdP adds her to Admins
curl -s -o /dev/null "${{H[@]}}" -X PATCH "$SCIM/Groups/{admins_id}" -d '{add}'
status /admin    # 200

# 3. the IdP deactivates her: locked out on the very next request
curl -s -o /dev/null "${{H[@]}}" -X PATCH "$SCIM/Users/$USER_ID" -d '{deact}'
status /admin    # 403
status /         # 403

# clean up (to run the session again)
curl -s "${{H[@]}}" -X DELETE "$SCIM/Users/$USER_ID"

# 4. an agent ({DEMO_AGENT}) owned by bob, in Automation: /api lets it in (docs/agents.md)
BOB=$(curl -s "${{H[@]}}" -X POST "$SCIM/Users" -d '{bob}' | {get_id})
AGENT_ID=$(curl -s "${{H[@]}}" -X POST "$SCIM/Agents" -d '{agent}' | {get_id})
AUTOMATION=$(curl -s "${{H[@]}}" "$SCIM/Groups?filter=displayName%20eq%20%22Automation%22" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Resources"][0]["id"])')
curl -s -o /dev/null "${{H[@]}}" -X PATCH "$SCIM/Groups/$AUTOMATION" -d '{add_agent}'
JWT=$({agent_cmd})
status /api      # 200: an agent in Automation
status /eng      # 403: a route for people only

# 5. its owner leaves: the agent is suspended at the next request
curl -s -o /dev/null "${{H[@]}}" -X PATCH "$SCIM/Users/$BOB" -d '{deact}'
status /api      # 403
curl -s "${{H[@]}}" -X DELETE "$SCIM/Agents/$AGENT_ID"; curl -s "${{H[@]}}" -X DELETE "$SCIM/Users/$BOB"
"""


# ---------------------------------------------------------------------------------------------


def wait_for_stack(child: subprocess.Popen[bytes], stack_file: Path, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise DemoFailed(f"`scimgate up` exited with status {child.returncode}:\n{tail}")
        if stack_file.exists():
            with contextlib.suppress(ValueError, OSError):
                info: dict[str, Any] = json.loads(stack_file.read_text())
                if info.get("pids", {}).get("scimgate") == child.pid:
                    return info
        time.sleep(0.1)
    raise DemoFailed("`scimgate up` did not write stack.json within 60 s")


def stop_child(child: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(sig)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode if child.returncode is not None else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", default="demo", help="instance directory (default: demo)")
    parser.add_argument("--port", type=int, default=None, help="SCIM port (default 8000)")
    parser.add_argument("--haproxy-port", type=int, default=None, help="HAProxy port (8080)")
    parser.add_argument(
        "--scim-tls-port", type=int, default=None, help="HAProxy's SCIM TLS port (8443)"
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="stop after printing the session (for tests)"
    )
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    stack_file = directory / "stack.json"
    log = directory / "scimgate.log"

    cmd = [sys.executable, "-m", "scimgate.cli", "up", "--dir", str(directory)]
    if args.port:
        cmd += ["--port", str(args.port)]
    if args.haproxy_port:
        cmd += ["--haproxy-port", str(args.haproxy_port)]
    if args.scim_tls_port:
        cmd += ["--scim-tls-port", str(args.scim_tls_port)]
    print(f"starting: scimgate up --dir {directory}   (logs: {log})", flush=True)
    with open(log, "ab") as out:
        # Own session: Ctrl-C reaches us once and we forward it once (a second SIGINT would
        # make uvicorn skip its graceful shutdown).
        child = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    stopping: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        info = wait_for_stack(child, stack_file, log)
        stack = Stack(info)
        admins_id = stack.ensure_group("Admins")
        stack.ensure_group("Engineering")
        print(
            f"up: SCIM {stack.scim}   HAProxy {stack.web}   policy {info.get('policy_file')}",
            flush=True,
        )
        if stack.public:
            print(f"    SCIM for the IdP (TLS): {stack.public}   CA: {stack.ca_file}", flush=True)
        if info.get("console_url"):
            print(
                f"    admin console: {info['console_url']}   name {info['admin_name']}   "
                f"password {info['admin_password']}",
                flush=True,
            )
        print("\nself-check (a throwaway user, as the IdP and a browser would):")
        ok = True
        for step, expected, observed in self_check(stack, directory, admins_id):
            mark = "ok " if observed == expected else "FAIL"
            ok = ok and observed == expected
            print(f"  {mark} {step:<32} {observed} (expected {expected})")
        stack.delete_user(DEMO_USER)  # left by an earlier session: start clean
        print("\nTry it yourself (bash; copy-paste):\n")
        print(curl_session(stack, directory, admins_id))
        if not ok:
            print("the self-check FAILED: see", log, file=sys.stderr)
        if args.no_wait:
            return 0 if ok else 1
        print("Running. Ctrl-C stops HAProxy and scimgate.", flush=True)
        while child.poll() is None:
            time.sleep(0.5)
        print(f"`scimgate up` exited with status {child.returncode}; see {log}", file=sys.stderr)
        return child.returncode or 1
    except KeyboardInterrupt:
        return 0
    except DemoFailed as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        sig = signal.SIGTERM if stopping and stopping[0] == signal.SIGTERM else signal.SIGINT
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if child.poll() is None:
            print("\nstopping ...", flush=True)
        stop_child(child, sig)


if __name__ == "__main__":
    sys.exit(main())
