"""`bridge import`: adopting existing DomainAdmins, gently, without creating anything twice."""

from __future__ import annotations

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


def test_import_nms_lists_what_billing_does_not_know(tmp_path, sim, config_tree):
    sim.seed(
        {
            "accounts": [
                {"username": "stray", "perm_level": "DomainAdmin", "password": "Stray-Passw0rd-1"}
            ]
        }
    )
    result = run(tmp_path, config_tree, "import", "nms")
    assert result.exit_code == 0, result.output
    assert "unknown to billing: stray" in result.stdout


def test_import_refuses_a_csv_without_the_needed_columns(tmp_path, sim, config_tree):
    path = tmp_path / "bad.csv"
    path.write_text("name,price\nmail,5\n", encoding="utf-8")
    result = run(tmp_path, config_tree, "import", "whmcs", "--csv", str(path))
    assert result.exit_code == 1
    assert "lacks column(s) for service_ref, product_id, username, status" in result.output
