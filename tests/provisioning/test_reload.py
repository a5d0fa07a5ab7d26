"""A mapping changes without a restart: SIGHUP (`systemctl reload`, `make reload`) makes the
web app (gunicorn) and `bridge worker` read the config again; a broken file is refused with
one log line and the config already loaded is kept."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action
from tests.builders import post_hook, signed_headers
from tests.provisioning.test_processes import (
    serve_gunicorn,
    start_worker,  # noqa: F401 - a fixture
    wait_until,
)

BROKEN = "tiers: [this is not\n"


@pytest.fixture
def config_tree(config_tree: dict[str, Any]) -> dict[str, Any]:
    """Queued work is the worker's: no inline apply."""
    config_tree["intake"]["inline_timeout_s"] = 0
    return config_tree


def write(path: Path, tree: dict[str, Any] | str) -> None:
    path.write_text(tree if isinstance(tree, str) else yaml.safe_dump(tree), encoding="utf-8")


def test_bridge_worker_reloads_on_sighup(client, sim, config_tree, start_worker, tmp_path):  # noqa: F811
    config_file = tmp_path / "bridge.yaml"  # the file start_worker gave the worker
    worker = start_worker()
    wait_until(lambda: "started" in worker.log(), 60, "the worker to start")
    assert f"config {config_file} (named by --config), loaded " in worker.log()

    config_tree["tiers"]["starter"]["mailboxes"] = 7
    write(config_file, config_tree)
    worker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "config reloaded" in worker.log(), 30, "the reload")
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1001))
    wait_until(lambda: sim.account("mail1001"), 30, "the worker to create mail1001")
    assert sim.account("mail1001")["quota_mailboxes"] == 7  # the new tier, no restart

    write(config_file, BROKEN)
    worker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "config reload refused" in worker.log(), 30, "the refusal")
    refusal = next(line for line in worker.log().splitlines() if "reload refused" in line)
    assert f"still serving config {config_file}" in refusal and "line 2, column 1" in refusal
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 1002))
    wait_until(lambda: sim.account("mail1002"), 30, "the worker to go on with the kept config")
    assert sim.account("mail1002")["quota_mailboxes"] == 7
    assert worker.stop()[0] == 0


@pytest.fixture
def gunicorn(
    app, sim, config_tree, tmp_path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path, Path]]:
    """The bridge under gunicorn.conf.py (one worker), its config file and its log."""
    config_file = tmp_path / "bridge.yaml"
    write(config_file, config_tree)
    log_path = tmp_path / "gunicorn.log"
    with serve_gunicorn(config_file, log_path) as (url, proc):
        yield url, proc, config_file, log_path


def bundle(url: str, service: int) -> Any:
    """The service's quota bundle as the served config maps it (signed connector endpoint)."""
    body = json.dumps({"service": service}).encode()
    answer = requests.post(
        f"{url}/hooks/whmcs/service", data=body, headers=signed_headers("whmcs", body), timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["bundle"]


def booted(log: Path) -> list[str]:
    return re.findall(r"Booting worker with pid: (\d+)", log.read_text(errors="replace"))


def hup_and_wait(proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """SIGHUP, then wait for `what` in the log, a new worker, and the old one gone."""
    before = booted(log)
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: what in log.read_text(errors="replace"), 30, what)
    wait_until(lambda: len(booted(log)) > len(before), 60, "a new gunicorn worker")
    gone = f"Worker exiting (pid: {before[-1]})"
    wait_until(lambda: gone in log.read_text(errors="replace") or proc.poll() is not None, 60, gone)
    assert proc.poll() is None, log.read_text(errors="replace")


def test_gunicorn_reloads_on_sighup_and_keeps_the_config_when_the_file_is_broken(
    gunicorn, config_tree
):
    url, proc, config_file, log = gunicorn
    assert f"config {config_file} (named by BRIDGE_CONFIG), loaded " in log.read_text()
    body = json.dumps(whmcs_envelope(Action.CREATE, 2001, product=99)).encode()
    answer = requests.post(
        f"{url}/hooks/whmcs", data=body, headers=signed_headers("whmcs", body), timeout=30
    ).json()
    assert answer["reason"] == "unmapped_product"
    assert bundle(url, 2001) is None

    config_tree["products"]["whmcs"][99] = "business"
    write(config_file, config_tree)
    hup_and_wait(proc, log, "config reloaded")
    assert bundle(url, 2001)["mailboxes"] == 25  # mapped now, no restart

    write(config_file, BROKEN)
    hup_and_wait(proc, log, "config reload refused")
    text = log.read_text(errors="replace")
    refusal = next(line for line in text.splitlines() if "config reload refused" in line)
    assert f"still serving config {config_file}" in refusal and "line 2, column 1" in refusal
    assert "Traceback" not in text
    assert bundle(url, 2001)["mailboxes"] == 25  # the new worker serves the kept config
