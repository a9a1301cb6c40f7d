"""Screenshots of every console page for docs/console.md, taken with the same browser set-up
as the tests (Debian's chromium through Playwright).

    .venv/bin/python -m tests.support.screenshots --out docs/images

Starts `scimgate up` in a temporary directory, provisions a few people and groups over SCIM
(one of them deactivated, so the story shows an enforced deprovisioning), signs in as the
demo operator and saves one PNG per page.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from tests.support.console import launch_chromium
from tests.support.net import free_port
from tests.support.up import UpStack, start_up

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PEOPLE = ["alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]


def provision(up: UpStack) -> dict[str, str]:
    ids: dict[str, str] = {}
    with up.scim() as scim:
        for name in PEOPLE:
            reply = scim.post("/Users", json={"schemas": [USER], "userName": name, "active": True})
            ids[name] = reply.json()["id"]
        for group, members in (("Admins", PEOPLE[:2]), ("Engineering", PEOPLE[1:])):
            gid = scim.post("/Groups", json={"schemas": [GROUP], "displayName": group}).json()["id"]
            ids[group] = gid
            scim.patch(f"/Groups/{gid}", json={"schemas": [PATCH], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": ids[m]} for m in members]},
            ]})  # fmt: skip
        scim.patch(f"/Users/{ids['bob@example.com']}", json={"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "active", "value": False},
        ]})  # fmt: skip
    return ids


def shoot(page: Any, url: str, path: Path) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(path), full_page=True)
    print(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        up = start_up(Path(tmp) / "demo", "--console-port", str(free_port()))
        try:
            ids = provision(up)
            base = up.info["console_url"]
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(base)
                page.screenshot(path=str(args.out / "console-sign-in.png"))
                page.fill("#name", up.info["admin_name"])
                page.fill("#password", up.info["admin_password"])
                page.click("#sign-in")
                page.wait_for_url("**/console/")
                shoot(page, base, args.out / "console-overview.png")
                shoot(page, base + "people", args.out / "console-people.png")
                shoot(
                    page, base + f"people/{ids['bob@example.com']}", args.out / "console-person.png"
                )
                shoot(page, base + "groups", args.out / "console-groups.png")
                shoot(page, base + f"groups/{ids['Admins']}", args.out / "console-group.png")
                shoot(page, base + "access?route=admin&at=", args.out / "console-access.png")
                page.goto(base + "audit")
                page.click("#verify")
                page.wait_for_url("**/console/audit")
                shoot(page, base + "audit", args.out / "console-audit.png")
                shoot(page, base + "tokens", args.out / "console-tokens.png")
                shoot(page, base + "policy", args.out / "console-policy.png")
                browser.close()
        finally:
            up.stop()


if __name__ == "__main__":
    main()
