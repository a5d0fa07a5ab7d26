"""`bridge import whmcs` checks the migration from the old plugin (guide step 4)."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner
from sqlalchemy import select

from bridge.cli import cli
from bridge.models import Service

HEADER = "id,pid,userid,email,username,status,server_module,configoption1"


def _run(tmp_path, config_tree, *args):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def _seed(sim, names):
    sim.seed(
        {
            "accounts": [
                {
                    "username": name,
                    "perm_level": "DomainAdmin",
                    "password": "Old-Plugin-Passw0rd",
                    "recovery_email": f"{name}@example.org",
                    "quota_domains": 3,
                    "quota_domainaliases": 3,
                    "quota_aliases": 50,
                    "quota_mailboxes": 25,
                    "storagequota_total": 51200,
                }
                for name in names
            ]
        }
    )


def _csv(tmp_path, lines):
    path = tmp_path / "services.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return str(path)


def test_the_checklist_names_what_is_not_switched_yet(tmp_path, sim, config_tree, db):
    _seed(sim, ["old1", "old2", "old3", "old4"])
    path = _csv(
        tmp_path,
        [
            "5001,2,1,old1@example.org,old1,Active,mailbridge,",
            "5002,2,2,old2@example.org,old2,Active,mailcheap,51200",
            "5003,2,3,old3@example.org,old3,Suspended,mailbridge,business",
            "5004,2,4,old4@example.org,old4,Active,MailBridge,51200",
            "5005,2,5,gone@example.org,old9,Terminated,mailcheap,51200",
        ],
    )
    result = _run(tmp_path, config_tree, "import", "whmcs", "--csv", path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert (
        'checklist (step 4a): service 5002 (old2) is on a server entry of module "mailcheap": '
        "edit that server entry to Mail Bridge, or move the service to the bridge's server entry"
    ) in out
    assert (
        'checklist (step 4c): product 2: its Tier key (configoption1) "51200" is not a tier of '
        "the bridge (2 service(s)); clear it in the product's Module Settings or choose one of: "
        "agency, business, starter"
    ) in out
    assert "5005" not in out  # terminated: nothing left to switch
    assert "checklist: 2" in out and "the migration is not finished" in out

    tiers = dict(db.execute(select(Service.service_ref, Service.tier_key)).all())
    assert tiers == {"5001": None, "5002": None, "5003": "business", "5004": None}

    as_json = _run(tmp_path, config_tree, "import", "whmcs", "--csv", path, "--json")
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    items = [line["checklist"] for line in lines if "checklist" in line]
    assert [(i["check"], i["service_refs"], i["value"]) for i in items] == [
        ("old_module", ["5002"], "mailcheap"),
        ("stale_tier_key", ["5002", "5004"], "51200"),
    ]
    assert lines[-1]["summary"]["checklist"] == 2


def test_a_finished_migration_passes_and_old_exports_still_work(tmp_path, sim, config_tree):
    _seed(sim, ["old1"])
    done = _csv(tmp_path, ["5001,2,1,old1@example.org,old1,Active,mailbridge,business"])
    result = _run(tmp_path, config_tree, "import", "whmcs", "--csv", done)
    assert result.exit_code == 0, result.output
    assert "checklist: 0" in result.stdout and "checklist (" not in result.stdout
    plain = tmp_path / "plain.csv"
    plain.write_text("id,pid,userid,email,username,status\n5001,2,1,old1@example.org,old1,Active\n")
    result = _run(tmp_path, config_tree, "import", "whmcs", "--csv", str(plain))
    assert result.exit_code == 0 and "checklist: 0" in result.stdout
