"""The WHMCS server module, run by real PHP against a live bridge and the NMS simulator."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bridge.config import parse_settings
from bridge.lifecycle import EventStatus
from bridge.models import Event, Service, Usage
from bridge.web import use_settings
from tests.conftest import WHMCS_SECRET
from tests.integrations.conftest import INTEGRATIONS, PASSWORD
from tests.provisioning.conftest import give_domain


def test_every_php_file_lints(php):
    files = sorted([*INTEGRATIONS.rglob("*.php"), *INTEGRATIONS.rglob("*.pdt")])
    assert len(files) >= 12
    here = INTEGRATIONS.parent / "tests" / "integrations"
    for path in [*files, here / "harness.php", here / "harness_whmcs_classes.php"]:
        done = subprocess.run([php, "-l", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_metadata_and_product_settings(whmcs):
    meta = whmcs.run({"mode": "whmcs_static", "function": "MetaData"})
    assert meta["APIVersion"] == "1.1" and meta["RequiresServer"] is True
    assert meta["DisplayName"]
    # HTTPS only (plain HTTP just for loopback): no port-80 default to offer
    assert meta["DefaultSSLPort"] == "443" and "DefaultNonSSLPort" not in meta
    # Server Sync: https://developers.whmcs.com/provisioning-modules/server-sync/
    assert meta["ListAccountsUniqueIdentifierField"] == "username"
    assert meta["ListAccountsUniqueIdentifierDisplayName"] == "Username"
    assert meta["ListAccountsProductField"] == "configoption1"
    options = whmcs.run({"mode": "whmcs_static", "function": "ConfigOptions"})
    assert list(options) == ["Tier key"] and options["Tier key"]["Type"] == "text"
    assert options["Tier key"]["Loader"] == "mailbridge_TierLoader"
    assert "extra_mailboxes|Extra mailboxes" in options["Tier key"]["Description"]
    buttons = whmcs.run({"mode": "whmcs_static", "function": "AdminCustomButtonArray"})
    assert buttons == {
        "Transfer mail ownership": "TransferOwnership",
        "Report client change": "MoveService",
    }


def test_lifecycle_reaches_the_mail_server(whmcs, sim):
    params = whmcs.params()
    assert whmcs.call("CreateAccount", params) == "success"
    account = sim.account("mail1042")
    assert account["perm_level"] == "DomainAdmin" and account["enabled"] == 1
    assert (account["quota_domains"], account["quota_aliases"]) == (1, 10)
    assert (account["quota_mailboxes"], account["storagequota_total"]) == (5, 5120)
    assert account["recovery_email"] == "dana77@acme-example.net"
    assert whmcs.properties()["mailbridge_owner"] == "77"

    suspend = whmcs.params(suspendreason="Overdue on payment")
    assert whmcs.call("SuspendAccount", suspend) == "success"
    assert sim.account("mail1042")["enabled"] == 0
    assert whmcs.call("UnsuspendAccount", params) == "success"
    assert sim.account("mail1042")["enabled"] == 1

    upgraded = whmcs.params(options={"extra_mailboxes": 3})
    assert whmcs.call("ChangePackage", upgraded) == "success"
    account = sim.account("mail1042")
    assert (account["quota_mailboxes"], account["storagequota_total"]) == (8, 5120 + 3 * 1024)

    before = account["password_hash"]
    assert whmcs.call("ChangePassword", whmcs.params(password="New-Mail-Passw0rd!")) == "success"
    assert sim.account("mail1042")["password_hash"] != before

    assert whmcs.call("Renew", upgraded) == "success"
    assert whmcs.call("TerminateAccount", upgraded) == "success"
    assert sim.account("mail1042")["enabled"] == 0  # disabled now, deleted after the grace days


def test_tier_key_in_the_product_settings_wins(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params(pid=1, tier="business")) == "success"
    assert sim.account("mail1042")["quota_mailboxes"] == 25


def test_what_is_sent_and_what_is_logged(whmcs, db):
    tricky = 'Qu"ote/Back\\slash-9x'
    assert whmcs.call("CreateAccount", whmcs.params(password=tricky)) == "success"
    assert whmcs.call("SuspendAccount", whmcs.params(password=tricky)) == "success"
    create, suspend = whmcs.module_log()
    for entry in (create, suspend):
        assert WHMCS_SECRET in entry["replace_vars"]
        stored = "\n".join(entry["stored"])
        assert WHMCS_SECRET not in stored and WHMCS_SECRET.removeprefix("whsec_") not in stored
        assert tricky not in stored and json.dumps(tricky)[1:-1] not in stored
    assert tricky in create["replace_vars"]
    body = json.loads(create["request"].split("\n\n", 1)[1])
    assert body["event"] == "CreateAccount" and body["params"]["password"] == tricky
    assert not [k for k in body["params"] if k.startswith("server") or k == "model"]
    assert "mailbridge_owner" not in body["params"]["customfields"]
    suspend_body = json.loads(suspend["request"].split("\n\n", 1)[1])
    assert "password" not in suspend_body["params"]  # only create and change password carry it
    assert "mailbridge_last_call" not in suspend_body["params"]["customfields"]
    events = db.scalars(select(Event).order_by(Event.id)).all()
    assert len({e.webhook_id for e in events}) == 2
    assert events[-1].webhook_id == whmcs.last_call()["id"]


def test_unmapped_product_is_a_readable_error(whmcs, sim):
    answer = whmcs.call("CreateAccount", whmcs.params(pid=77))
    assert answer.startswith("Mail bridge: unmapped_product: ")
    assert "(bridge event " in answer
    assert sim.account("mail1042") is None


def test_module_queue_retry_reuses_the_delivery(app, whmcs, sim, db, config_tree):
    params = whmcs.params(pid=77)
    assert "unmapped_product" in whmcs.call("CreateAccount", params)
    first = whmcs.last_call()
    assert first["ok"] is False

    config_tree["products"]["whmcs"][77] = "starter"  # staff add the mapping, then retry
    use_settings(app, parse_settings(config_tree, {}))
    assert whmcs.call("CreateAccount", params) == "success"
    retried = whmcs.last_call()
    assert (retried["id"], retried["at"], retried["ok"]) == (first["id"], first["at"], True)
    events = db.scalars(select(Event)).all()
    assert len(events) == 1 and events[0].webhook_id == first["id"]
    assert events[0].status is EventStatus.APPLIED
    assert sim.account("mail1042")["quota_mailboxes"] == 5

    # the same command again is a new invocation: a new id, a new event, nothing to change
    assert whmcs.call("CreateAccount", params) == "success"
    again = whmcs.last_call()
    assert again["id"] != first["id"] and again["at"] != first["at"]
    assert len(db.scalars(select(Event)).all()) == 2


def test_changed_params_get_a_new_id(whmcs, sim):
    assert "unmapped_product" in whmcs.call("CreateAccount", whmcs.params(pid=77))
    first = whmcs.last_call()
    assert whmcs.call("CreateAccount", whmcs.params(pid=2)) == "success"  # product corrected
    assert whmcs.last_call()["id"] != first["id"]
    assert sim.account("mail1042")["quota_mailboxes"] == 25


def test_queued_is_not_a_success_until_it_applied(whmcs, sim, work):
    assert whmcs.call("CreateAccount", whmcs.params()) == "success"
    sim.fault(kind="down")
    answer = whmcs.call("SuspendAccount", whmcs.params())
    assert answer.startswith("Queued on the mail bridge (")
    assert "retry from the Module Queue" in answer
    queued = whmcs.last_call()
    assert queued["ok"] is False

    sim.clear_faults()  # the bridge's worker applies it on its schedule
    assert [o.status for o in work(now=datetime.now(UTC) + timedelta(minutes=10))] == ["applied"]
    assert whmcs.call("SuspendAccount", whmcs.params()) == "success"  # Module Queue "Retry"
    assert whmcs.last_call()["id"] == queued["id"]
    assert sim.account("mail1042")["enabled"] == 0


def test_test_connection(whmcs, sim):
    assert whmcs.call("TestConnection", whmcs.server) == {"success": True, "error": ""}
    sim.fault(kind="down")
    answer = whmcs.call("TestConnection", whmcs.server)
    assert answer["success"] is False
    assert answer["error"].startswith("Mail bridge: ")
    assert "cannot use the mail server" in answer["error"]


def test_test_connection_with_nothing_listening(whmcs):
    server = {**whmcs.server, "serverport": 9}
    answer = whmcs.call("TestConnection", server)
    assert answer["success"] is False
    assert answer["error"].startswith("Mail bridge unreachable at http://127.0.0.1:9/hooks/whmcs/")


def test_a_wrong_secret_is_a_readable_401(whmcs, sim):
    other = "whsec_" + "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmI="
    answer = whmcs.call("CreateAccount", whmcs.params(serverpassword=other))
    assert answer.startswith("Mail bridge refused the request (HTTP 401 signature_mismatch)")
    assert "whsec_" in answer and other not in answer
    assert sim.account("mail1042") is None
    bad = whmcs.call("TestConnection", {**whmcs.server, "serverpassword": "not-a-secret"})
    assert bad["success"] is False and "whsec_" in bad["error"]


COMPLIANT_16 = re.compile(r"^(?=.*[A-Z])(?=.*[a-z])(?=.*[0-9])[A-HJ-NP-Za-km-np-z2-9]{16}$")


def test_a_whmcs_default_password_is_replaced_saved_then_sent(whmcs, sim, db):
    weak = "aB3dE6gH9k"  # WHMCS's default: 10 letters and digits, both cases
    assert whmcs.call("CreateAccount", whmcs.params(password=weak)) == "success"
    saved = whmcs.service_password()
    assert saved is not None and COMPLIANT_16.match(saved), saved
    assert whmcs.localapi("UpdateClientProduct") == [{"serviceid": 1042, "servicepassword": saved}]
    account = sim.account("mail1042")
    assert account["perm_level"] == "DomainAdmin" and account["enabled"] == 1
    (create,) = whmcs.sent("CreateAccount")
    assert create["params"]["password"] == saved  # the saved one is the one sent
    (entry,) = whmcs.module_log()
    assert saved in entry["replace_vars"] and saved not in "\n".join(entry["stored"])
    assert weak not in entry["request"]
    assert db.scalars(select(Event)).one().status is EventStatus.APPLIED

    # WHMCS's Module Queue retry builds $params from the service: the saved password is
    # compliant, so it is sent as it is and nothing new is generated
    assert whmcs.call("CreateAccount", whmcs.params(password=saved)) == "success"
    assert len(whmcs.localapi("UpdateClientProduct")) == 1
    assert whmcs.sent("CreateAccount")[-1]["params"]["password"] == saved


def test_generated_passwords_differ(whmcs, sim):
    for service in (1042, 1043):
        assert whmcs.call("CreateAccount", whmcs.params(service, password="")) == "success"
    first, second = whmcs.service_password(1042), whmcs.service_password(1043)
    assert COMPLIANT_16.match(first) and COMPLIANT_16.match(second) and first != second


def test_nothing_is_sent_when_the_generated_password_cannot_be_saved(whmcs, sim):
    answer = whmcs.run(
        {
            "mode": "whmcs",
            "function": "CreateAccount",
            "params": whmcs.params(password="short"),
            "localapi_fail": ["UpdateClientProduct"],
        }
    )
    assert answer.startswith("Mail bridge: the service password does not meet")
    assert "could not be saved" in answer and "short" not in answer
    assert whmcs.module_log() == []  # no request was made
    assert whmcs.service_password() is None
    assert sim.account("mail1042") is None


def test_a_compliant_password_is_sent_unchanged_and_nothing_saved(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params(password=PASSWORD)) == "success"
    assert whmcs.sent("CreateAccount")[0]["params"]["password"] == PASSWORD
    assert whmcs.localapi("UpdateClientProduct") == []
    assert whmcs.service_password() is None


def test_change_password_refuses_a_weak_one_without_calling_the_bridge(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params()) == "success"
    sent = len(whmcs.module_log())
    weak_ones = ("", "short", "alllowercase-123", "ALLUPPERCASE-123", "No-Digits-Here", "Sh0rt-Pas")
    for weak in weak_ones:
        answer = whmcs.call("ChangePassword", whmcs.params(password=weak))
        assert answer == (
            "The new password must be at least 12 characters and contain an upper-case "
            "letter, a lower-case letter and a digit."
        )
    assert len(whmcs.module_log()) == sent  # no HTTP call was made
    assert whmcs.localapi("UpdateClientProduct") == []


def test_only_the_clients_email_and_name_leave_whmcs(whmcs, sim, db):
    assert whmcs.call("CreateAccount", whmcs.params()) == "success"
    assert whmcs.call("SuspendAccount", whmcs.params()) == "success"
    wanted = {"email", "firstname", "lastname", "companyname"}
    for body in whmcs.sent("CreateAccount") + whmcs.sent("SuspendAccount"):
        assert set(body["params"]["clientsdetails"]) == wanted
        text = json.dumps(body)
        for private in ("1 Example Street", "LS1 1AA", "+44.1130000000", "GB123456789", "Leeds"):
            assert private not in text
    for event in db.scalars(select(Event)).all():  # what the bridge stored
        assert set(event.payload["params"]["clientsdetails"]) == wanted
    assert sim.account("mail1042")["recovery_email"] == "dana77@acme-example.net"


def test_renew_never_fails(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params()) == "success"
    assert whmcs.call("Renew", whmcs.params()) == "success"
    unreachable = whmcs.params(serverport=9)
    assert whmcs.call("Renew", unreachable) == "success"
    assert "Mail bridge unreachable" in whmcs.read("activity.json", [])[-1]
    wrong_secret = whmcs.params(serverpassword="not-a-secret")
    assert whmcs.call("Renew", wrong_secret) == "success"
    assert [e["action"] for e in whmcs.module_log()] == ["CreateAccount", "Renew", "Renew"]


def test_https_is_required_off_loopback_and_tls_is_verified(whmcs):
    remote = {**whmcs.server, "serverhostname": "bridge.example.org", "serverport": ""}
    answer = whmcs.call("CreateAccount", whmcs.params(**remote))
    assert answer.startswith('Mail bridge: tick "Secure" (HTTPS)')

    secure = {**remote, "serversecure": "on", "serverhostname": "bridge.example.org/mb"}
    options = whmcs.run({"mode": "whmcs_curl_options", "params": secure})
    assert options["CURLOPT_URL"] == "https://bridge.example.org/mb/hooks/whmcs"
    assert options["CURLOPT_SSL_VERIFYPEER"] is True
    assert options["CURLOPT_SSL_VERIFYHOST"] == 2
    assert options["CURLOPT_CONNECTTIMEOUT"] == 5
    assert options["CURLOPT_TIMEOUT"] == 25
    assert options["CURLOPT_FOLLOWLOCATION"] is False
    headers = options["CURLOPT_HTTPHEADER"]
    assert "webhook-id: msg_test" in headers and "webhook-timestamp: 1700000000" in headers
    assert any(h.startswith("webhook-signature: v1,") for h in headers)
    with_port = whmcs.run({"mode": "whmcs_curl_options", "params": {**secure, "serverport": 8443}})
    assert with_port["CURLOPT_URL"] == "https://bridge.example.org:8443/mb/hooks/whmcs"


def test_signature_matches_the_bridge_verifier(whmcs):
    from bridge.signature import sign

    options = whmcs.run({"mode": "whmcs_curl_options", "params": whmcs.server})
    header = next(h for h in options["CURLOPT_HTTPHEADER"] if h.startswith("webhook-signature"))
    assert header.split(": ", 1)[1] == sign(WHMCS_SECRET, "msg_test", 1700000000, b"{}")


def test_client_area_shows_setup_escaped(app, whmcs, sim, config_tree):
    missing = whmcs.call("ClientArea", whmcs.params())
    assert missing["vars"]["mailbridge_notice"] == "Your mail account is being set up."
    assert whmcs.call("CreateAccount", whmcs.params()) == "success"
    config_tree["client_setup"]["mail_hostname"] = 'mail.example.net"><script>alert(1)</script>'
    use_settings(app, parse_settings(config_tree, {}))
    area = whmcs.call("ClientArea", whmcs.params())
    assert area["templatefile"] == "templates/clientarea"
    variables = area["vars"]["mailbridge"]
    assert variables["username"] == "mail1042" and variables["state"] == "active"
    assert variables["webmail_url"] == "https://mail.example.net/webmail/"
    assert variables["spf"] == "v=spf1 include:example.net -all"
    assert variables["mx"] == [{"host": "mx1.example.net", "priority": 10}]
    panel = area["vars"]["mailbridge_panel"]
    assert "<script>" not in panel and "&lt;script&gt;" in panel
    assert "&quot;&gt;" in panel


def test_admin_tab_shows_state_last_event_and_link(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params()) == "success"
    assert whmcs.call("SuspendAccount", whmcs.params()) == "success"
    fields = whmcs.call("AdminServicesTabFields", whmcs.params())
    assert fields["Mail bridge state"].startswith("<strong>suspended</strong>")
    assert "suspend: applied" in fields["Last bridge event"]
    assert "/admin/events?source=whmcs&amp;service=1042" in fields["Bridge event log"]
    sim.fault(kind="down")  # the tab still renders
    assert "Mail bridge state" in whmcs.call("AdminServicesTabFields", whmcs.params())


def test_transfer_mail_ownership_button(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params(1042, pid=2)) == "success"
    assert whmcs.call("CreateAccount", whmcs.params(1043, client=78, pid=2)) == "success"
    give_domain(sim, "mail1042", "moving.example", [("a", 100, 1), ("b", 100, 1)])

    answer = whmcs.call("TransferOwnership", whmcs.params(1042, pid=2))
    assert "mailbridge_transfer_to" in answer and answer != "success"
    itself = whmcs.params(1042, pid=2, customfields={"mailbridge_transfer_to": "1042"})
    assert "another service" in whmcs.call("TransferOwnership", itself)

    target = whmcs.params(1042, pid=2, customfields={"mailbridge_transfer_to|Move mail to": "1043"})
    assert whmcs.call("TransferOwnership", target) == "success"
    source, receiver = sim.account("mail1042"), sim.account("mail1043")
    assert source["domains"] == "" and "moving.example" in receiver["domains"]
    assert receiver["quota_mailboxes_used"] == 2


def test_a_module_command_reports_an_unreported_move_first(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params(client=77)) == "success"
    assert whmcs.call("SuspendAccount", whmcs.params(client=90)) == "success"
    account = sim.account("mail1042")
    assert account["recovery_email"] == "dana90@acme-example.net" and account["enabled"] == 0
    assert [e["action"] for e in whmcs.module_log()] == [
        "CreateAccount",
        "MoveService",
        "SuspendAccount",
    ]
    assert whmcs.properties()["mailbridge_owner"] == "90"


def test_report_client_change_button_with_nothing_to_report(whmcs, sim):
    assert "nothing to report" in whmcs.call("MoveService", whmcs.params())
    assert whmcs.call("CreateAccount", whmcs.params()) == "success"
    assert "already has client #77" in whmcs.call("MoveService", whmcs.params())


def test_password_is_required_where_it_is_the_point(whmcs):
    answer = whmcs.call("ChangePassword", whmcs.params(password=""))
    assert answer.startswith("The new password must be at least 12 characters")
    assert PASSWORD not in answer and whmcs.module_log() == []


def test_tier_dropdown_comes_from_the_bridge(whmcs, sim):
    tiers = whmcs.call("TierLoader", whmcs.server)
    assert list(tiers) == ["", "starter", "business", "agency"]
    assert tiers["starter"] == (
        "starter (1 domains, 1 domain aliases, 10 aliases, 5 mailboxes, 5120 MB)"
    )
    assert "product mapping" in tiers[""]
    stale = whmcs.call("TierLoader", {**whmcs.server, "configoption1": "5120"})
    assert stale["5120"].startswith("5120: NOT a tier of the bridge")
    sim.fault(kind="down")  # the tiers come from the bridge's config, not the mail server
    assert "business" in whmcs.call("TierLoader", whmcs.server)


def test_tier_loader_failures_are_exceptions_whmcs_shows(whmcs):
    wrong = {
        **whmcs.server,
        "serverpassword": "whsec_" + "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmI=",
    }
    answer = whmcs.call("TierLoader", wrong)
    assert answer["exception"].startswith("Mail bridge: the tiers could not be read: ")
    assert "HTTP 401" in answer["exception"]
    nowhere = whmcs.call("TierLoader", {**whmcs.server, "serverport": 9})
    assert "unreachable" in nowhere["exception"]
    assert "first server of the product's server group" in nowhere["exception"]


def test_admin_tab_reports_a_stale_tier_key(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params()) == "success"
    fields = whmcs.call("AdminServicesTabFields", whmcs.params(tier="5120"))
    assert "Tier key &quot;5120&quot; is not a tier of the bridge" in fields["Tier key"]
    assert "starter, business, agency" in fields["Tier key"]
    fine = whmcs.call("AdminServicesTabFields", whmcs.params(tier="business"))
    assert "Tier key" not in fine


def test_server_sync_lists_the_domainadmins(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params(1042)) == "success"
    assert whmcs.call("CreateAccount", whmcs.params(1043, pid=2)) == "success"
    assert whmcs.call("SuspendAccount", whmcs.params(1043, pid=2)) == "success"
    assert whmcs.call("CreateAccount", whmcs.params(1044)) == "success"
    assert whmcs.call("TerminateAccount", whmcs.params(1044)) == "success"
    listed = whmcs.call("ListAccounts", whmcs.server)
    assert listed["success"] is True
    assert [
        (a["uniqueIdentifier"], a["username"], a["product"], a["status"])
        for a in listed["accounts"]
    ] == [
        ("mail1042", "mail1042", "starter", "Active"),
        ("mail1043", "mail1043", "business", "Suspended"),
    ]  # a terminated service is no account to import
    broken = whmcs.call("ListAccounts", {**whmcs.server, "serverport": 9})
    assert broken["success"] is False and "unreachable" in broken["error"]


def _usage(db, ref, used, total, read_at):
    service = db.scalar(
        select(Service).where(Service.source == "whmcs", Service.service_ref == ref)
    )
    db.add(
        Usage(
            service_id=service.id,
            username=service.username,
            storage_used_mb=used,
            storage_total_mb=total,
            mailboxes_used=1,
            mailboxes_limit=5,
            domains_used=1,
            domains_limit=1,
            aliases_used=0,
            aliases_limit=10,
            read_at=read_at,
        )
    )
    db.commit()


def test_usage_update_writes_disk_figures_by_service_id(whmcs, sim, db):
    for service in (1042, 1043, 1044):
        assert whmcs.call("CreateAccount", whmcs.params(service)) == "success"
    read_at = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    _usage(db, "1042", 700, 5120, read_at)
    _usage(db, "1043", 300, 5120, read_at)  # on another server entry in WHMCS
    rows = [
        {"id": 1042, "server": 3, "domain": "same.example", "diskusage": 0, "disklimit": 0},
        {"id": 1043, "server": 4, "domain": "same.example", "diskusage": 0, "disklimit": 0},
        {"id": 1044, "server": 3, "domain": "same.example", "diskusage": 0, "disklimit": 0},
    ]
    (whmcs.state / "tblhosting.json").write_text(json.dumps(rows))
    scenario = {
        "mode": "whmcs",
        "function": "UsageUpdate",
        "params": {**whmcs.server, "serverid": 3},
    }
    assert whmcs.run({**scenario, "tz": "UTC"}) == "success"
    after = {row["id"]: row for row in whmcs.read("tblhosting.json", [])}
    assert (after[1042]["diskusage"], after[1042]["disklimit"]) == (700, 5120)
    assert after[1042]["lastupdate"] == "2026-12-01 06:00:00"
    assert after[1043]["diskusage"] == 0  # matched by id and server, never by domain
    assert "lastupdate" not in after[1044]  # not read yet: no false zero
    (log,) = [e for e in whmcs.module_log() if e["action"] == "UsageUpdate"]
    assert json.loads(log["response"]) == {
        "read": 3,
        "updated": 1,
        "not_read_yet": 1,
        "not_here": 1,
    }


def test_usage_update_reports_an_unreachable_bridge(whmcs):
    answer = whmcs.call("UsageUpdate", {**whmcs.server, "serverid": 3, "serverport": 9})
    assert answer.startswith("Mail bridge: the usage could not be read: ")
    assert whmcs.read("capsule.json", []) == []


def test_usage_update_reads_every_page(whmcs, sim, db):
    refs = list(range(2001, 2001 + 3))
    for ref in refs:
        assert whmcs.call("CreateAccount", whmcs.params(ref)) == "success"
        _usage(db, str(ref), ref - 2000, 5120, datetime(2026, 12, 1, 6, 0, tzinfo=UTC))
    rows = [{"id": ref, "server": 3} for ref in refs]
    (whmcs.state / "tblhosting.json").write_text(json.dumps(rows))
    answer = whmcs.run(
        {
            "mode": "whmcs",
            "function": "UsageUpdate",
            "params": {**whmcs.server, "serverid": 3},
            "usage_page": 2,
        }
    )
    assert answer == "success"
    assert [row["diskusage"] for row in whmcs.read("tblhosting.json", [])] == [1, 2, 3]
