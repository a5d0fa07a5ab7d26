"""`--state-file`: the simulator keeps its objects and tokens across restarts ("State file")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from nmsim.app import create_app
from nmsim.server import start
from tests.nmsim.conftest import MASTER, WORLD, Nms
from tests.nmsim.test_profiles import domain_admin


def objects(nms: Nms) -> dict[str, Any]:
    """The state dump without what a restart resets (config, clock, limiter, faults, and the
    start-up MasterAdmin, which comes from --master)."""
    state = nms.ctl.get("/_sim/state").json()
    state["accounts"] = [a for a in state["accounts"] if a["username"] != MASTER[0]]
    return {k: state[k] for k in state if k not in ("config", "clock", "rate_limiter", "faults")}


def test_restart_keeps_accounts_domains_forwarders_and_tokens(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with start(rate_limit=0, state_file=str(path)) as first:
        nms = Nms(first.url)
        nms.seed(WORLD)
        master = nms.master()
        reseller = nms.login("reseller-a")
        alias = {"alias": "info@alpha.example", "recipients": "x@elsewhere.example"}
        assert reseller.post("/api/v1/aliases/", json=alias).status_code == 200
        assert master.post("/api/v1/accounts/", json=domain_admin("later")).status_code == 200
        before = objects(nms)
        token = reseller.auth
    assert not list(tmp_path.glob("*.tmp"))
    with start(rate_limit=0, state_file=str(path)) as second:
        nms = Nms(second.url)
        assert objects(nms) == before
        again = nms.as_token(*token)  # type: ignore[misc]
        row = again.get("/api/v1/accounts/reseller-a/").json()
        assert (row["quota_aliases_used"], row["quota_mailboxes_used"]) == (1, 1)
        assert nms.login(*MASTER).get("/api/v1/accounts/later/").status_code == 200


def test_every_change_is_written_and_reset_empties_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with start(rate_limit=0, state_file=str(path)) as handle:
        nms = Nms(handle.url)
        assert not path.exists()  # nothing changed yet
        master = nms.master()
        assert master.post("/api/v1/accounts/", json=domain_admin("saved")).status_code == 200
        names = [a["username"] for a in json.loads(path.read_text())["objects"]["accounts"]]
        assert names == ["saved"]  # the start-up MasterAdmin comes from --master, not the file
        nms.ctl.post("/_sim/reset")
        assert json.loads(path.read_text())["objects"]["accounts"] == []


def test_a_broken_state_file_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"nmsim_state": 1, "objects": {"accounts": [{"username": "x"}]}}')
    with pytest.raises(ValueError, match="state file"):
        create_app(state_file=str(path))
    proc = subprocess.run(
        [sys.executable, "-m", "nmsim", "--port", "0", "--state-file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "delete that file to start empty" in proc.stderr


def test_a_killed_simulator_restarts_with_its_accounts(tmp_path: Path) -> None:
    """Written after each change, so even SIGKILL loses nothing that was answered."""
    path = tmp_path / "state.json"
    command = [sys.executable, "-m", "nmsim", "--port", "0", "--state-file", str(path)]

    def url_of(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        return proc.stdout.readline().strip().rsplit(" ", 1)[1]

    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            nms = Nms(url_of(proc))
            created = nms.master().post("/api/v1/accounts/", json=domain_admin("survivor"))
            assert created.status_code == 200
        finally:
            proc.kill()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            url = url_of(proc)
            accounts = requests.get(f"{url}/_sim/state", timeout=5).json()["accounts"]
        finally:
            proc.terminate()
    assert "survivor" in [a["username"] for a in accounts]
