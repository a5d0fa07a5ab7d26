"""The module's hooks.php: services moved to another client are reported as MoveService."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading

import pytest
from werkzeug.serving import make_server

from tests.integrations.conftest import INTEGRATIONS


def test_the_hooks_ship_inside_the_module_directory():
    # WHMCS loads hooks.php from a provisioning module's own directory
    module = INTEGRATIONS / "whmcs" / "modules" / "servers" / "mailbridge"
    assert (module / "hooks.php").is_file()
    assert not (INTEGRATIONS / "whmcs" / "includes").exists()
    for path in INTEGRATIONS.joinpath("whmcs").rglob("*.php"):
        assert "accountid" not in path.read_text(), path


def _moved(whmcs, service: int, client: int) -> dict:
    return whmcs.params(service, client=client)


def test_a_moved_service_is_reported_by_the_edit_hook(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params(1042, client=77)) == "success"
    services = {"1042": _moved(whmcs, 1042, 99)}  # staff moved it to client 99

    hooks = whmcs.run(
        {
            "mode": "whmcs_hook",
            "hook": "AdminServiceEdit",
            "vars": {"userid": 99, "serviceid": 1042},
            "services": services,
        }
    )
    assert set(hooks) == {"AdminServiceEdit", "ServiceEdit", "AfterClientMerge"}
    assert sim.account("mail1042")["recovery_email"] == "dana99@acme-example.net"
    assert whmcs.properties()["mailbridge_owner"] == "99"
    calls = whmcs.read("localapi.json", [])
    assert {"command": "ModuleCustom", "data": {"serviceid": 1042, "func_name": "MoveService"}} in [
        {k: c[k] for k in ("command", "data")} for c in calls
    ]
    moved = [e for e in whmcs.module_log() if e["action"] == "MoveService"]
    assert len(moved) == 1 and '"previous_userid":77' in moved[0]["request"]
    assert "reported" in whmcs.read("activity.json", [])[0]

    # the next save (ServiceEdit fires too) finds nothing to report
    whmcs.run(
        {
            "mode": "whmcs_hook",
            "hook": "ServiceEdit",
            "vars": {"userid": 99, "serviceid": 1042},
            "services": services,
        }
    )
    assert len([e for e in whmcs.module_log() if e["action"] == "MoveService"]) == 1


def test_client_merge_reports_every_mail_service(whmcs, sim):
    for service in (1042, 1043):
        assert whmcs.call("CreateAccount", whmcs.params(service, client=77)) == "success"
    services = {
        "1042": _moved(whmcs, 1042, 99),
        "1043": _moved(whmcs, 1043, 99),
        "1050": whmcs.params(1050, client=99),  # 99's own service, never created: not ours
    }
    whmcs.run(
        {
            "mode": "whmcs_hook",
            "hook": "AfterClientMerge",
            "vars": {"toUserID": 99, "fromUserID": 77},
            "services": services,
        }
    )
    for username in ("mail1042", "mail1043"):
        assert sim.account(username)["recovery_email"] == "dana99@acme-example.net"
    assert sim.account("mail1050") is None


def test_a_failed_report_is_logged_and_does_not_break_the_page(whmcs, sim):
    assert whmcs.call("CreateAccount", whmcs.params(1042, client=77)) == "success"
    services = {"1042": {**_moved(whmcs, 1042, 99), "serverport": 9}}  # bridge unreachable
    whmcs.run(
        {
            "mode": "whmcs_hook",
            "hook": "AdminServiceEdit",
            "vars": {"userid": 99, "serviceid": 1042},
            "services": services,
        }
    )
    activity = whmcs.read("activity.json", [])
    assert "not reported yet" in activity[-1] and "Report client change" in activity[-1]
    assert whmcs.properties()["mailbridge_owner"] == "77"  # still to report


@pytest.fixture
def tls_bridge(app, tmp_path):
    """The bridge over HTTPS with a self-signed certificate no CA vouches for."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_an_unverifiable_certificate_is_refused(whmcs, sim, tls_bridge):
    secure = {"serversecure": "on", "serverport": tls_bridge}
    answer = whmcs.call("CreateAccount", whmcs.params(**secure))
    assert answer.startswith(f"Mail bridge unreachable at https://127.0.0.1:{tls_bridge}/")
    assert "TLS certificate could not be verified" in answer
    assert sim.account("mail1042") is None
