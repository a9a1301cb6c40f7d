"""`scimgate audit verify --export FILE` (issue 15): an export is verified offline, without the
database, and so is it by the stand-alone verifier printed in docs/production.md (the exact
block, extracted from the page), on a real export of both backends and on tampered copies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from scimgate.cli import main
from tests.fixtures.server import ScimServer
from tests.support.scim import create_user

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> Result:
    """The scimgate command in-process (the stand-alone verifier runs as its own process)."""
    return CliRunner().invoke(main, list(args), env={"SCIMGATE_DIR": None})


def docs_verifier(tmp_path: Path) -> Path:
    page = (ROOT / "docs" / "production.md").read_text()
    block = re.search(
        r"<!-- verifier:start -->\n```python\n(.*?)```\n<!-- verifier:end -->", page, re.S
    )
    assert block is not None, "the verifier block is gone from docs/production.md"
    code = block.group(1)
    assert len(code.splitlines()) <= 25  # stays short enough to read and retype
    path = tmp_path / "verify.py"
    path.write_text(code)
    return path


@pytest.fixture
def export(scim_server: ScimServer, tmp_path: Path) -> Path:
    with scim_server.client() as scim:
        for i in range(3):
            create_user(scim, f"auditee{i}-{tmp_path.name}@example.com")
    out = run("audit", "export", "--dir", str(scim_server.directory))
    assert out.exit_code == 0, out.stderr
    path = tmp_path / "audit.jsonl"
    path.write_text(out.stdout)
    assert len(out.stdout.splitlines()) >= 4
    return path


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, events: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events))
    return path


def test_a_real_export_verifies_offline_and_with_the_docs_verifier(
    export: Path, tmp_path: Path
) -> None:
    events = lines(export)
    ok = run("audit", "verify", "--export", str(export))
    assert ok.exit_code == 0, ok.stderr
    head = events[-1]["hash"]
    assert ok.stdout.splitlines()[0] == (
        f"export OK: {len(events)} events, seq 1..{len(events)}, head {head}"
    )
    assert "starts at the first event of the trail" in ok.stdout
    verifier = docs_verifier(tmp_path)
    docs = subprocess.run(
        [sys.executable, str(verifier), str(export)], capture_output=True, text=True
    )
    assert docs.returncode == 0, docs.stderr
    assert docs.stdout.strip() == f"OK: {len(events)} events, head {head}"


def test_csv_export_verifies(scim_server: ScimServer, tmp_path: Path) -> None:
    out = run("audit", "export", "--dir", str(scim_server.directory), "--format", "csv")
    path = tmp_path / "audit.csv"
    path.write_text(out.stdout)
    ok = run("audit", "verify", "--export", str(path))
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.startswith("export OK: ")


def test_tampered_exports_are_broken_for_both_verifiers(export: Path, tmp_path: Path) -> None:
    verifier = docs_verifier(tmp_path)
    for tamper in ("edit", "delete", "swap", "forge"):
        tampered_is_caught(export, tmp_path, verifier, tamper)


def tampered_is_caught(export: Path, tmp_path: Path, verifier: Path, tamper: str) -> None:
    events = lines(export)
    middle = len(events) // 2
    victim = events[middle]
    if tamper == "edit":  # an event changed after the fact
        victim["detail"] = {**victim["detail"], "note": "edited"}  # type: ignore[dict-item]
    elif tamper == "delete":
        del events[middle]
    elif tamper == "swap":
        events[middle], events[middle + 1] = events[middle + 1], events[middle]
    else:  # changed AND re-hashed by someone who knows the recipe: the next link breaks
        from scimgate.audit.chain import event_hash

        victim["actor"] = "someone-else"
        victim["hash"] = event_hash(str(victim["prev_hash"]), victim)
    bad = write(tmp_path / f"{tamper}.jsonl", events)
    out = run("audit", "verify", "--export", str(bad))
    assert out.exit_code == 1, (tamper, out.output)
    broken = re.match(r"export BROKEN at event (\d+): ", out.stderr)
    assert broken is not None, out.stderr
    expected = victim["seq"] if tamper != "forge" else int(victim["seq"]) + 1  # type: ignore[call-overload]
    assert int(broken.group(1)) == expected
    docs = subprocess.run([sys.executable, str(verifier), str(bad)], capture_output=True, text=True)
    assert docs.returncode == 1 and docs.stderr.startswith("BROKEN at line "), docs.stderr


def test_a_partial_export_says_where_it_starts(scim_server: ScimServer, tmp_path: Path) -> None:
    full = run("audit", "export", "--dir", str(scim_server.directory)).stdout.splitlines()
    path = tmp_path / "tail.jsonl"
    path.write_text("\n".join(full[2:]) + "\n")
    ok = run("audit", "verify", "--export", str(path))
    assert ok.exit_code == 0, ok.stderr
    assert "starts after event 2" in ok.stdout and "a partial export" in ok.stdout


def test_export_needs_no_database_and_rejects_dir(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n")
    out = run("audit", "verify", "--export", str(junk))
    assert out.exit_code == 1 and "not a JSON line" in out.stderr
    assert "Traceback" not in out.stderr
    both = run("audit", "verify", "--export", str(junk), "--dir", str(tmp_path))
    assert both.exit_code == 2
    missing = run("audit", "verify", "--export", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.jsonl"]
