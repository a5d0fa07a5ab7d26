"""`bridge check-server` against the simulator over real HTTP: each nmsim profile reported as
what it is, the profile stored, a blocker's exit status, the throwaway accounts removed even when
a step fails or the run is interrupted, and no run without --yes when nobody can answer."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from flask import request

from bridge.cli import cli
from bridge.mailserver.probe import ASSUMPTIONS, USAGE_FIELDS, Verdict
from bridge.mailserver.profile import load_profile
from bridge.web import runtime
from nmsim.profiles import PROFILES
from nmsim.server import start
from tests.provisioning import conftest as provisioning
from tests.provisioning.conftest import Sim

# The live simulator fixtures of tests/provisioning, in scope here under their own names.
sim_server = provisioning.sim_server
sim = provisioning.sim
config_tree = provisioning.config_tree

OK, ADAPTED, BLOCKER, NOT_PROBED = (v.value for v in Verdict)

#: What the documented profile looks like; each other profile changes only what it names.
DOCUMENTED = {
    "empty_search": "200",
    "far_start": "200",
    "token_per_login": True,
    "zero_quota": "zero",
    "username_case": "refused",
    "email_case": "kept",
    "usage_fields_missing": [],
    "shared_domains": True,
    "error_body": "json",
    "plain_delete": True,
    "cascade_delete": True,
    "cascade_removes_domains": True,
    "rate_limit_status": None,
    "retry_after": None,
}
#: Per nmsim profile: the rows that are not OK, and the profile fields that differ.
EXPECTED: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "documented": ({}, {}),
    "empty-404": (
        {"empty_search": ADAPTED, "far_start": ADAPTED},
        {"empty_search": "404", "far_start": "404"},
    ),
    "empty-204": (
        {"empty_search": ADAPTED, "far_start": ADAPTED},
        {"empty_search": "204", "far_start": "204"},
    ),
    "single-token": ({"token_per_login": ADAPTED}, {"token_per_login": False}),
    "no-cascade": (
        {"cascade_delete": ADAPTED, "cascade_domains": NOT_PROBED},
        {"cascade_delete": False, "cascade_removes_domains": None},
    ),
    "zero-unlimited": ({"zero_quota": ADAPTED}, {"zero_quota": "unlimited"}),
    "lowercase": (
        {"username_case": ADAPTED, "email_case": ADAPTED},
        {"username_case": "lowered", "email_case": "lowered"},
    ),
    # A ban is never provoked on purpose: this profile looks like the documented one.
    "ban-403": ({}, {}),
    "no-usage": ({"usage_fields": ADAPTED}, {"usage_fields_missing": list(USAGE_FIELDS)}),
}


def check_server(tmp_path, config_tree: dict[str, Any], *args: str) -> Result:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    return CliRunner().invoke(
        cli, ["--config", str(config), "check-server", *args], catch_exceptions=False
    )


def leftovers(sim: Sim) -> tuple[list[str], list[str]]:
    """Accounts other than the MasterAdmin, and domains, still on the simulator."""
    state = sim.ctl("GET", "state")
    names = [a["username"] for a in state["accounts"] if a["perm_level"] != "MasterAdmin"]
    return names, [d["domain"] for d in state.get("domains", [])]


def test_every_nmsim_profile_has_an_expectation():
    assert set(EXPECTED) == set(PROFILES)


@pytest.mark.parametrize("profile", list(EXPECTED))
def test_check_server_reports_each_profile(tmp_path, app, sim, config_tree, profile):
    sim.ctl("PATCH", "config", json={"profile": profile, "rate_limit": 0})
    result = check_server(tmp_path, config_tree, "--yes", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows, fields = EXPECTED[profile]
    verdicts = {c["key"]: c["verdict"] for c in report["checks"]}
    expected = {key: OK for key in ASSUMPTIONS} | {"rate_limit": NOT_PROBED, "ban": NOT_PROBED}
    assert verdicts == expected | rows
    observed = {k: v for k, v in report["profile"].items() if k in DOCUMENTED}
    assert observed == DOCUMENTED | fields
    assert report["stored"] is True and report["passed"] is True
    # stored in the database, as reported
    with runtime(app).reads() as session:
        stored = load_profile(session, sim.url)
    assert stored is not None and stored.as_dict() == report["profile"]
    # nothing left behind, within a rate limit's worth of calls
    assert leftovers(sim) == ([], [])
    assert report["leftovers"] == [] and report["calls"] <= 21


def test_json_shape_and_text_report(tmp_path, app, sim, config_tree):
    result = check_server(tmp_path, config_tree, "--yes", "--json")
    report = json.loads(result.output)
    assert set(report) == {
        "base_url",
        "checked_at",
        "passed",
        "blockers",
        "aborted",
        "leftovers",
        "calls",
        "checks",
        "profile",
        "stored",
    }
    assert [c["key"] for c in report["checks"]] == list(ASSUMPTIONS)
    for row in report["checks"]:
        assert set(row) == {"key", "assumption", "expected", "observed", "verdict", "todo"}
        assert row["verdict"] in {v.value for v in Verdict}
    assert report["base_url"] == sim.url and report["blockers"] == 0

    text = check_server(tmp_path, config_tree, "--yes")
    assert text.exit_code == 0, text.output
    lines = [" ".join(line.split()) for line in text.output.splitlines()]
    assert "assumption expected observed verdict" in lines
    assert any(line.startswith("quota 0 reads back 0 and allows none") for line in lines)
    assert "throwaway accounts removed" in lines
    assert "profile replaced in the database" in lines
    assert lines[-1] == "no blockers"


def test_a_blocker_exits_non_zero_and_is_stored(tmp_path, app, sim, config_tree):
    # A server that lets a domain sit under one DomainAdmin only: transfers cannot work.
    sim.ctl("PATCH", "config", json={"exclusive_domains": True})
    result = check_server(tmp_path, config_tree, "--yes")

    assert result.exit_code == 1, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    row = next(line for line in lines if line.startswith("2nd DomainAdmin lists a listed domain"))
    assert row.endswith("BLOCKER") and "domain_taken" in row
    assert any(line.startswith("BLOCKER 2nd DomainAdmin") and "by hand" in line for line in lines)
    assert lines[-1] == "1 blocker(s): fix them before going live"
    with runtime(app).reads() as session:
        stored = load_profile(session, sim.url)
    assert stored is not None and stored.shared_domains is False
    assert leftovers(sim) == ([], [])


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "json_500", "method": "PATCH", "path": "/api/v1/accounts/"},
        {"kind": "html_502", "method": "DELETE", "path": "/api/v1/accounts/"},
    ],
    ids=["first-patch", "first-delete"],
)
def test_a_failed_step_still_removes_the_throwaway_accounts(tmp_path, app, sim, config_tree, fault):
    sim.fault(**fault)
    result = check_server(tmp_path, config_tree, "--yes", "--json")

    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert "the server is busy or failing" in report["aborted"]
    assert report["stored"] is False and report["leftovers"] == []
    assert {c["verdict"] for c in report["checks"] if c["key"] == "cascade_delete"} == {NOT_PROBED}
    assert leftovers(sim) == ([], [])
    created = [e for e in sim.requests() if e["method"] == "POST" and e["path"].endswith("s/")]
    assert created, "the probe had created something before the fault"
    with runtime(app).reads() as session:
        assert load_profile(session, sim.url) is None


def test_ctrl_c_still_removes_the_throwaway_accounts(tmp_path, app, config_tree):
    # A simulator of our own whose domain route interrupts this (main) thread, as Ctrl-C would.
    handle = start(rate_limit=0)
    main = threading.main_thread().ident
    assert main is not None

    @handle.app.before_request
    def interrupt() -> None:
        if request.method == "POST" and request.path == "/api/v1/domains/":
            signal.pthread_kill(main, signal.SIGINT)

    # Python's own Ctrl-C handler, as in a terminal (an earlier test may have replaced it).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        config_tree["mailserver"]["base_url"] = handle.url
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
        result = CliRunner().invoke(cli, ["--config", str(config), "check-server", "--yes"])
        assert result.exit_code == 130, result.output
        assert "interrupted; nothing stored. The throwaway accounts were removed." in (
            result.output
        )
        leftover = [u for u in handle.sim.state.accounts if u != "admin"]
        assert leftover == [] and handle.sim.state.zones == {}
    finally:
        signal.signal(signal.SIGINT, previous)
        handle.stop()
    with runtime(app).reads() as session:
        assert load_profile(session, handle.url) is None


def test_asks_first_and_refuses_without_yes_when_nobody_can_answer(tmp_path, app, sim, config_tree):
    sim.clear_log()
    result = check_server(tmp_path, config_tree)
    assert result.exit_code == 1
    assert "creates and then removes two throwaway DomainAdmins" in result.output
    assert "run it with --yes" in result.output
    assert sim.requests() == []


def test_the_rate_limit_probe_stops_at_the_first_refusal(tmp_path, app, sim, config_tree):
    sim.ctl("PATCH", "config", json={"rate_limit": 20})  # the documented NMS limit
    config_tree["mailserver"]["rate_limit_per_s"] = 10
    result = check_server(tmp_path, config_tree, "--yes", "--json", "--probe-rate-limit")

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    row = next(c for c in report["checks"] if c["key"] == "rate_limit")
    assert row["verdict"] == OK and row["observed"].startswith("HTTP 429, Retry-After ")
    assert report["profile"]["rate_limit_status"] == 429
    assert report["profile"]["retry_after"] is not None
    refused = [e for e in sim.requests() if e["status"] == 429]
    assert len(refused) == 1, "one refusal, far from the ten that get an address banned"
    # every process waits the Retry-After out
    assert runtime(app).mailserver.limiter.state().blocked_until > 0
