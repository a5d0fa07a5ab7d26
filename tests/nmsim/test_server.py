"""The importable helpers and the command line."""

from __future__ import annotations

import base64
import subprocess
import sys

import requests

from nmsim.app import create_app
from nmsim.server import start


def test_start_returns_a_handle_on_a_free_port() -> None:
    handle = start(port=0, rate_limit=0)
    try:
        assert handle.port > 0
        assert handle.url == f"http://127.0.0.1:{handle.port}"
        resp = requests.post(
            f"{handle.url}/api/v1/auth/",
            json={"username": "admin", "password": "Sim-Master-Passw0rd"},
        )
        assert resp.status_code == 200
    finally:
        handle.stop()
    try:
        requests.get(f"{handle.url}/api/v1/accounts/", timeout=1)
    except requests.ConnectionError:
        pass
    else:
        raise AssertionError("server still answering after stop()")


def test_custom_master_login() -> None:
    with start(master="root:Another-Passw0rd") as handle:
        resp = requests.post(
            f"{handle.url}/api/v1/auth/", json={"username": "root", "password": "Another-Passw0rd"}
        )
        assert resp.status_code == 200


def test_create_app_works_in_process() -> None:
    app = create_app(rate_limit=0, seed={"domains": [{"domain": "x.example"}]})
    client = app.test_client()
    resp = client.post(
        "/api/v1/auth/", json={"username": "admin", "password": "Sim-Master-Passw0rd"}
    )
    assert resp.status_code == 200
    token = resp.get_json()["auth"]["auth_token"]
    basic = base64.b64encode(f"admin:{token}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    assert client.get("/api/v1/domains/", headers=headers).get_json()["domains"] == ["x.example"]


def test_help_is_clear() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nmsim", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in ("--host", "--port", "--master", "--rate-limit", "--token-ttl", "--no-control"):
        assert option in out


def test_weak_master_password_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nmsim", "--master", "admin:weak"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "password" in proc.stderr


def test_subprocess_prints_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmsim", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("nmsim listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert "admin / Sim-Master-Passw0rd" in proc.stdout.readline()
        resp = requests.post(
            f"{url}/api/v1/auth/", json={"username": "admin", "password": "Sim-Master-Passw0rd"}
        )
        assert resp.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
