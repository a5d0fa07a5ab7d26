"""`bridge import`: adopting existing DomainAdmins, gently, without creating anything twice."""

from __future__ import annotations

import requests
import yaml
from click.testing import CliRunner
from sqlalchemy import func, select

from bridge.cli import cli
from bridge.models import Service

COUNT = 500


def seed_server(sim) -> None:
    sim.seed(
        {
            "accounts": [
                {
                    "username": f"old{i}",
                    "perm_level": "DomainAdmin",
                    "password": "Old-Plugin-Passw0rd",
                    "recovery_email": f"client{i}@example.org",
                    "quota_domains": 1,
                    "quota_domainaliases": 1,
                    "quota_aliases": 10,
                    "quota_mailboxes": 4 if i == 7 else 5,  # one account drifted by hand
                    "storagequota_total": 5120,
                }
                for i in range(COUNT)
            ]
        }
    )


def export_csv(tmp_path) -> str:
    lines = ["id,pid,userid,email,username,status,domain,extra_mailboxes"]
    lines += [
        f"{5000 + i},1,{i},client{i}@example.org,old{i},Active,c{i}.example,0" for i in range(COUNT)
    ]
    lines.append("9001,1,9001,gone@example.org,notthere,Active,gone.example,0")
    lines.append("9002,1,9002,ended@example.org,old1,Terminated,x.example,0")
    path = tmp_path / "services.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def run(tmp_path, config_tree, *args):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def test_import_adopts_500_accounts_without_a_429(tmp_path, sim, config_tree, db):
    seed_server(sim)
    sim.ctl("PATCH", "config", json={"rate_limit": 20})  # the documented NMS limit
    sim.clear_log()
    config_tree["mailserver"]["rate_limit_per_s"] = 10
    csv_path = export_csv(tmp_path)

    result = run(tmp_path, config_tree, "import", "whmcs", "--csv", csv_path, "--batch", "100")
    assert result.exit_code == 0, result.output
    assert "importing" in result.stderr
    assert (
        "adopted: 500, already linked: 0, missing on server: 1, unknown to billing: 0, "
        "drift: 1, skipped: 1, errors: 0"
    ) in result.stdout
    assert "mailboxes: billing 5, server 4" in result.stdout
    assert "run again with --apply" in result.stdout

    log = sim.ctl("GET", "requests")
    assert not [e for e in log["entries"] if e["status"] == 429]
    assert all(e["method"] == "GET" or e["path"] == "/api/v1/auth/" for e in log["entries"])
    assert len(log["entries"]) <= 1 + COUNT // 50 + 1  # a login and one call per page
    assert db.scalar(select(func.count()).select_from(Service)) == COUNT + 1
    assert sim.account("old7")["quota_mailboxes"] == 4  # reported, not changed

    # again, with --apply: nothing adopted twice, the drift is fixed, nothing created
    again = run(tmp_path, config_tree, "import", "whmcs", "--csv", csv_path, "--apply")
    assert again.exit_code == 0, again.output
    assert "adopted: 0, already linked: 500" in again.stdout
    assert sim.account("old7")["quota_mailboxes"] == 5
    writes = [
        e
        for e in sim.ctl("GET", "requests")["entries"]
        if e["method"] != "GET" and e["path"] != "/api/v1/auth/"
    ]
    assert [(e["method"], e["path"]) for e in writes] == [("PATCH", "/api/v1/accounts/old7/")]


def test_import_nms_needs_the_source_and_sorts_every_account(tmp_path, sim, config_tree, client):
    """An account of another source is never "unknown", and nothing suggests deleting."""
    from bridge.adapters.samples import blesta_body, whmcs_envelope
    from bridge.lifecycle import Action
    from tests.builders import post_hook

    for source, body in (
        ("whmcs", whmcs_envelope(Action.CREATE, 1001)),
        ("whmcs", whmcs_envelope(Action.CREATE, 1002)),
        ("blesta", blesta_body(Action.CREATE, 7)),
    ):
        assert post_hook(client, source, body).get_json()["status"] == "applied"
    post_hook(client, "whmcs", whmcs_envelope(Action.TERMINATE, 1002))  # deleted later: fine
    stray = {"username": "stray", "perm_level": "DomainAdmin", "password": "Stray-Passw0rd-1"}
    sim.seed({"accounts": [stray]})
    token = sim.ctl("POST", "tokens", json={"username": "admin"})["auth_token"]
    gone = requests.delete(
        f"{sim.url}/api/v1/accounts/mail1001/", auth=("admin", token), timeout=10
    )
    assert gone.status_code < 300, gone.text

    missing = run(tmp_path, config_tree, "import", "nms")
    assert missing.exit_code == 2 and "Missing option '--source'" in missing.output

    result = run(tmp_path, config_tree, "import", "nms", "--source", "whmcs")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "named by a whmcs service: 1" in text  # mail1002, terminated, still disabled
    assert "named by a service of another source: 1\n" in text
    assert "    blesta7 (blesta:7)" in text
    assert "named by no service the bridge knows: 1\n" in text and "    stray\n" in text
    assert "whmcs services whose DomainAdmin is not on the server: 1\n" in text
    assert "    whmcs:1001 (mail1001)" in text and "bridge reconcile whmcs ID" in text
    assert "bridge services link SOURCE ID USERNAME" in text
    assert "delet" not in text.lower()

    other = run(tmp_path, config_tree, "import", "nms", "--source", "blesta", "--json")
    assert other.exit_code == 0, other.output
    report = yaml.safe_load(other.stdout)
    assert report["linked"] == {"blesta7": "blesta:7"}
    assert report["other_source"] == {"mail1002": "whmcs:1002"}
    assert report["unknown_to_billing"] == ["stray"]
    assert report["missing_on_server"] == {}
    assert "delet" not in other.stdout.lower()

    wrong = run(tmp_path, config_tree, "import", "nms", "--source", "hostbill")
    assert wrong.exit_code == 2 and 'no source "hostbill"' in wrong.output


def test_import_refuses_a_csv_without_the_needed_columns(tmp_path, sim, config_tree):
    path = tmp_path / "bad.csv"
    path.write_text("name,price\nmail,5\n", encoding="utf-8")
    result = run(tmp_path, config_tree, "import", "whmcs", "--csv", str(path))
    assert result.exit_code == 1
    assert "lacks column(s) for service_ref, product_id, username, status" in result.output
