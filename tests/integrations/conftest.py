"""Fixtures for the billing-side connectors: real PHP, a live bridge on a socket, nmsim."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BLESTA_SECRET, WHMCS_SECRET
from tests.provisioning.conftest import Sim, sim, sim_server, work  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
INTEGRATIONS = ROOT / "integrations"
HARNESS = Path(__file__).with_name("harness.php")
PASSWORD = "Welcome-Mail-2025x"


def _php_ready() -> bool:
    if shutil.which("php") is None:
        return False
    probe = 'exit(function_exists("curl_init") && function_exists("json_encode") ? 0 : 1);'
    check = subprocess.run(
        ["php", "-r", probe],
        capture_output=True,
        timeout=30,
    )
    return check.returncode == 0


@pytest.fixture(scope="session")
def php() -> str:
    """The php binary with curl and json; installed from Debian (php-cli, php-curl) if missing."""
    if _php_ready():
        return "php"
    if shutil.which("apt-get") is None:
        pytest.skip("php-cli/php-curl are missing and there is no apt-get to install them")
    install = ["apt-get", "install", "-y", "-q", "php-cli", "php-curl"]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:  # a stale package list: refresh once and try again
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0 or not _php_ready():
        pytest.skip(f"could not install php-cli and php-curl: {done.stderr.strip()[-400:]}")
    return "php"


@pytest.fixture
def config_tree(config_tree: dict[str, Any], sim: Sim) -> dict[str, Any]:  # noqa: F811
    """The provisioning set-up (simulator, inline apply) with production body limits."""
    config_tree["mailserver"].update(base_url=sim.url, rate_limit_per_s=15)
    config_tree["intake"].update(inline_timeout_s=10, max_body_bytes=262144)
    config_tree["client_setup"] = {
        "mail_hostname": "mail.example.net",
        "webmail_url": "https://mail.example.net/webmail/",
        "admin_url": "https://mail.example.net/portal/",
        "mx": [{"host": "mx1.example.net", "priority": 10}],
        "spf_include": "example.net",
    }
    return config_tree


@pytest.fixture
def bridge_url(live_url: str) -> str:
    """The bridge app served on a real loopback socket (the shared live_url fixture)."""
    return live_url


class Php:
    """Runs harness.php with one scenario; the stubs keep their state in `state`."""

    def __init__(self, binary: str, state: Path) -> None:
        self.binary = binary
        self.state = state
        self.counter = itertools.count(1)

    def run(self, scenario: dict[str, Any]) -> Any:
        path = self.state / f"scenario-{next(self.counter)}.json"
        path.write_text(json.dumps({**scenario, "state_dir": str(self.state)}))
        done = subprocess.run(
            [self.binary, str(HARNESS), str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and done.stdout.strip(), done.stdout + done.stderr
        assert done.stderr == "", done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])["result"]

    def read(self, name: str, default: Any) -> Any:
        path = self.state / name
        return json.loads(path.read_text()) if path.exists() else default


class Whmcs(Php):
    """WHMCS as the module sees it: a server entry pointing at the bridge and services."""

    def __init__(self, binary: str, state: Path, bridge: str) -> None:
        super().__init__(binary, state)
        host, port = bridge.removeprefix("http://").split(":")
        self.server = {
            "server": True,
            "serverid": 3,
            "serverip": "",
            "serverhostname": host,
            "serverport": int(port),
            "serversecure": "",
            "serverusername": "whmcs",
            "serverpassword": WHMCS_SECRET,
            "serveraccesshash": "",
        }

    def params(
        self,
        service: int = 1042,
        *,
        client: int = 77,
        pid: int = 1,
        tier: str = "",
        options: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """A module $params array as WHMCS passes it.

        Keys: https://developers.whmcs.com/provisioning-modules/module-parameters/ ; what the
        module forwards of it: docs/design.md#whmcs-envelope.
        """
        params: dict[str, Any] = {
            "serviceid": service,
            "userid": client,
            "pid": pid,
            "domain": f"client{service}.example.net",
            "username": f"mail{service}",
            "password": PASSWORD,
            "producttype": "other",
            "moduletype": "mailbridge",
            "configoptions": {"extra_mailboxes": 0, **(options or {})},
            "customfields": {},
            "clientsdetails": {
                "id": client,
                "userid": client,
                "uuid": f"5f1c7e2a-0000-4000-8000-{client:012d}",
                "firstname": "Dana",
                "lastname": f"Ruiz{client}",
                "fullname": f"Dana Ruiz{client}",
                "companyname": "Acme Example Ltd",
                "email": f"dana{client}@acme-example.net",
                "address1": "1 Example Street",
                "city": "Leeds",
                "postcode": "LS1 1AA",
                "country": "GB",
                "phonenumber": "+44.1130000000",
                "tax_id": "GB123456789",
                "language": "english",
                "status": "Active",
            },
            **self.server,
        }
        for n in range(1, 25):
            params[f"configoption{n}"] = ""
        params["configoption1"] = tier
        params.update(overrides)
        return params

    def call(self, function: str, params: dict[str, Any]) -> Any:
        return self.run({"mode": "whmcs", "function": function, "params": params})

    def properties(self, service: int = 1042) -> dict[str, str]:
        return self.read("properties.json", {}).get(str(service), {})

    def last_call(self, service: int = 1042) -> dict[str, Any]:
        return json.loads(self.properties(service)["mailbridge_last_call"])

    def module_log(self) -> list[dict[str, Any]]:
        return self.read("module_log.json", [])

    def service_password(self, service: int = 1042) -> str | None:
        """The password saved on the service through localAPI UpdateClientProduct, if any."""
        return self.read("service_passwords.json", {}).get(str(service))

    def localapi(self, command: str) -> list[dict[str, Any]]:
        return [c["data"] for c in self.read("localapi.json", []) if c["command"] == command]

    def sent(self, action: str) -> list[dict[str, Any]]:
        """The bodies the module posted for one action, from the module log."""
        return [
            json.loads(e["request"].split("\n\n", 1)[1])
            for e in self.module_log()
            if e["action"] == action
        ]


@pytest.fixture
def whmcs(php: str, bridge_url: str, tmp_path: Path) -> Whmcs:
    state = tmp_path / "whmcs"
    state.mkdir()
    return Whmcs(php, state, bridge_url)


class Blesta(Php):
    """Blesta as the plugin sees it: settings, Services::get and Clients::get rows."""

    def __init__(self, binary: str, state: Path, bridge: str) -> None:
        super().__init__(binary, state)
        self.settings = {
            "url": f"{bridge}/hooks/blesta",
            "secret": BLESTA_SECRET,
            "package_ids": [],
            "outbox_dir": str(state / "outbox"),
            "log_file": str(state / "mail_bridge.log"),
        }
        self.services: dict[str, Any] = {}
        self.clients: dict[str, Any] = {}

    def add(self, service: int = 215, *, client: int = 31, package: int = 1, **columns: Any):
        """A service as Blesta's Services::get returns it, with its client.

        The fields the bridge reads: docs/design.md#blesta-signed-events.
        """
        self.clients[str(client)] = {
            "id": client,
            "id_code": f"15{client}",
            "first_name": "Robin",
            "last_name": f"Client{client}",
            "company": "Example GmbH",
            "email": f"robin{client}@example.com",
            "status": "active",
            "settings": {"language": "en_us"},
        }
        row = {
            "id": service,
            "id_code": f"1{service}",
            "parent_service_id": None,
            "package_group_id": 2,
            "pricing_id": 100 + package,
            "client_id": client,
            "module_row_id": 1,
            "qty": 1,
            "status": "active",
            "suspension_reason": None,
            "date_added": "2025-03-04 10:15:02",
            "date_renews": "2025-04-04 10:15:02",
            "fields": [
                {"key": "mailbridge_username", "value": f"blesta{service}", "encrypted": 0},
                {"key": "mailbridge_domain", "value": f"c{service}.example.com", "encrypted": 0},
                {"key": "api_token", "value": "s3cr3t-module-value", "encrypted": 1},
            ],
            "options": [],
            "package": {
                "id": package,
                "name": f"Mail {package}",
                "module_id": 5,
                "email_content": [{"lang": "en_us", "html": "<p>Welcome</p>"}],
                "meta": {"plan": "", "api_password": "package-secret"},
            },
            **columns,
        }
        self.services[str(service)] = row
        return row

    def scenario(self, mode: str, **blesta: Any) -> dict[str, Any]:
        return {
            "mode": mode,
            "blesta": {
                "settings": self.settings,
                "services": self.services,
                "clients": self.clients,
                **blesta,
            },
        }

    def event(self, name: str, service: int = 215, **params: Any) -> Any:
        event = {"name": name, "params": {"service_id": service, **params}}
        return self.run(self.scenario("blesta_event", event=event))

    def log(self) -> str:
        path = self.state / "mail_bridge.log"
        return path.read_text() if path.exists() else ""

    def outbox(self) -> list[Path]:
        return sorted((self.state / "outbox").glob("*.json"))


@pytest.fixture
def blesta(php: str, bridge_url: str, tmp_path: Path) -> Blesta:
    state = tmp_path / "blesta"
    state.mkdir()
    return Blesta(php, state, bridge_url)
