"""`scimgate status` and `scimgate resync` against a real HAProxy and a SQLite store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from scimgate.cli import main
from scimgate.store.db import Database
from tests.fixtures.haproxy import RunningHAProxy
from tests.integration.test_sync_engine import (
    audit_events,
    desired,
    haproxy_config,
    key,
    layout_files,
    live_state,
    make_db,
    put,
    target,
)

pytestmark = pytest.mark.haproxy


def test_resync_then_status(tmp_path: Path, haproxy_factory: Callable[..., RunningHAProxy]) -> None:
    proc = haproxy_factory(haproxy_config(), files=layout_files())
    url = f"sqlite:///{tmp_path / 'scimgate.db'}"
    t = target(proc, "edge1")
    (tmp_path / "scimgate.yaml").write_text(
        yaml.safe_dump({"database_url": url, "targets": [t.__dict__]})
    )
    db: Database = make_db(url)
    try:
        put(db, {key(i): ",eng," for i in range(40)})
        put(db, {key(3): None})
        runner = CliRunner()

        # Never synced: the store says lag > 0 and a deprovision waits.
        out = runner.invoke(main, ["status", "--dir", str(tmp_path), "--json"])
        report = json.loads(out.stdout)["targets"][0]
        assert report["reachable"] is True and report["lag"] == 41
        assert report["newest_unconfirmed_deprovision"]["seq"] == 41

        out = runner.invoke(main, ["resync", "--dir", str(tmp_path), "--target", "edge1"])
        assert out.exit_code == 0, out.output
        assert "edge1: 39 entries in 16 shard(s), seq 41" in out.stdout
        assert live_state(proc) == desired(db)
        assert audit_events(db, "sync.resync")[-1]["reason"] == "manual"

        out = runner.invoke(main, ["status", "--dir", str(tmp_path)])
        assert out.exit_code == 0, out.output
        assert "edge1" in out.stdout and "yes" in out.stdout

        proc.stop()
        out = runner.invoke(main, ["status", "--dir", str(tmp_path), "--json"])
        assert out.exit_code == 1
        assert json.loads(out.stdout)["targets"][0]["reachable"] is False
        out = runner.invoke(main, ["resync", "--dir", str(tmp_path)])
        assert out.exit_code == 1 and "resync failed" in out.stderr
    finally:
        db.dispose()
