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
    """Blesta as the Mail Bridge module and plugin see it, with Blesta's own flows mimicked.

    blesta.json (shared with harness.php) holds the module rows, packages, clients and
    services (with their fields, decrypted as Blesta hands them to a module). The flow
    helpers do what Blesta's Services model does around a module call
    (app/models/services.php): call the module, and only when it set no Input error store the
    fields it returned and the new status.
    """

    def __init__(self, binary: str, state: Path, bridge: str) -> None:
        super().__init__(binary, state)
        self.row = {
            "id": 1,
            "module_id": 5,
            "meta": {
                "label": "Bridge",
                "bridge_url": bridge,
                "source": "blesta",
                "secret": BLESTA_SECRET,
            },
        }
        self.save({"rows": {"1": self.row}, "packages": {}, "clients": {}, "services": {}})

    def load(self) -> dict[str, Any]:
        return self.read("blesta.json", {})

    def save(self, data: dict[str, Any]) -> None:
        (self.state / "blesta.json").write_text(json.dumps(data))

    def package(self, pid: int = 1, plan: str = "", report_moves: str = "0") -> dict[str, Any]:
        """A package of the module (module_row 1), meta as the module's package fields save it."""
        data = self.load()
        package = {
            "id": pid,
            "name": f"Mail {pid}",
            "module_id": 5,
            "module_row": 1,
            "module_group": "",
            "meta": {"plan": plan, "report_moves": report_moves},
            "email_content": [{"lang": "en_us", "html": "<p>Welcome</p>"}],
        }
        data["packages"][str(pid)] = package
        self.save(data)
        return package

    def client(self, cid: int = 31) -> dict[str, Any]:
        data = self.load()
        client = {
            "id": cid,
            "id_code": f"15{cid}",
            "first_name": "Robin",
            "last_name": f"Client{cid}",
            "company": "Example GmbH",
            "email": f"robin{cid}@example.com",
            "address1": "5 Example Road",
            "phone": "+49.301234567",
            "tax_id": "DE123456789",
            "status": "active",
            "settings": {"language": "en_us"},
        }
        data["clients"][str(cid)] = client
        self.save(data)
        return client

    def call(self, method: str, *args: Any, row: int | None = 1) -> tuple[Any, Any]:
        """Run one module method; (what it returned, its Input errors or None)."""
        result = self.run(
            {"mode": "blesta_module", "method": method, "args": list(args), "row": row}
        )
        return result["value"], result["errors"]

    def service(self, sid: int = 215) -> dict[str, Any]:
        return self.load()["services"][str(sid)]

    def fields(self, sid: int = 215) -> dict[str, Any]:
        return {f["key"]: f["value"] for f in self.service(sid)["fields"]}

    def update(self, sid: int, **columns: Any) -> None:
        data = self.load()
        data["services"][str(sid)].update(columns)
        self.save(data)

    def order(
        self,
        sid: int = 215,
        *,
        client: int = 31,
        package: int = 1,
        username: str | None = None,
        domain: str | None = None,
        password: str = "",
    ) -> Any:
        """An order: Services::add with status pending (use_module false)."""
        self.client(client)
        vars_ = {
            "client_id": client,
            "pricing_id": 100 + package,
            "status": "pending",
            "use_module": "false",
            "mailbridge_username": username or f"blesta{sid}",
            "mailbridge_domain": domain or f"c{sid}.example.com",
            "mailbridge_password": password,
        }
        fields, errors = self.call("addService", {"package": package}, {"value": vars_})
        if errors:
            return errors
        data = self.load()
        data["services"][str(sid)] = {
            "id": sid,
            "id_code": f"1{sid}",
            "client_id": client,
            "pricing_id": 100 + package,
            "package_id": package,
            "module_row_id": 1,
            "status": "pending",
            "suspension_reason": None,
            "fields": fields,
            "options": [],
            "package": data["packages"][str(package)],
        }
        self.save(data)
        return None

    def activate(self, sid: int = 215, configoptions: dict[str, Any] | None = None) -> Any:
        """Blesta's activation of a paid pending service: Services::edit to active with the
        service's module fields merged into vars (as its provisioning task does)."""
        service = self.service(sid)
        vars_ = {f["key"]: f["value"] for f in service["fields"]}
        vars_.update(
            status="active",
            use_module="true",
            client_id=service["client_id"],
            pricing_id=service["pricing_id"],
            configoptions=configoptions or {},
        )
        fields, errors = self.call(
            "addService", {"package": service["package_id"]}, {"value": vars_}
        )
        if not errors:
            self.update(sid, status="active", fields=fields)
        return errors

    def act(self, method: str, sid: int = 215, status: str | None = None, *extra: Any) -> Any:
        """suspend/unsuspend/cancel/renew/edit: the module call, then Blesta's bookkeeping."""
        service = self.service(sid)
        fields, errors = self.call(
            method, {"package": service["package_id"]}, {"service": sid}, *extra
        )
        if not errors:
            if isinstance(fields, list):
                self.update(sid, fields=fields)
            if status:
                self.update(sid, status=status)
        return errors

    def module_log(self) -> list[dict[str, Any]]:
        return self.read("module_log.json", [])

    def sent(self, event: str | None = None) -> list[dict[str, Any]]:
        """The bodies the module posted (from Blesta's module log), optionally of one event."""
        bodies = [
            json.loads(e["data"].split("\n\n", 1)[1])
            for e in self.module_log()
            if e["direction"] == "input" and "\n\n{" in e["data"] and "webhook-id" in e["data"]
        ]
        return [b for b in bodies if event is None or b["event"] == event]

    def last_call(self, sid: int = 215) -> dict[str, Any]:
        return json.loads(self.fields(sid)["mailbridge_last_call"])


@pytest.fixture
def blesta(php: str, bridge_url: str, tmp_path: Path) -> Blesta:
    state = tmp_path / "blesta"
    state.mkdir()
    return Blesta(php, state, bridge_url)
