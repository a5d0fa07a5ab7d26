"""End to end in headless Chromium: log in, open the failed event, fix the mapping, Retry.

Chromium is Debian's (`/usr/bin/chromium`), driven by Playwright; no browser is ever
downloaded. When it is missing the setup installs it with apt-get, and the test is skipped
(with the reason) only when that is impossible. The test also refreshes the README's
screenshots in docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from bridge.db import utcnow
from bridge.lifecycle import Action, EventStatus
from bridge.models import Attempt, Event, Service
from bridge.web import runtime, use_settings
from tests.admin.conftest import OPERATOR, PASSWORD, fixed_settings, send

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The README's screenshots are refreshed only on request (BRIDGE_SCREENSHOTS=1), so a test
# run leaves the work tree clean; otherwise they go to a temporary directory.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def install_chromium() -> str | None:
    """Make sure Debian's chromium is there; return why not when it cannot be."""
    if os.access(CHROMIUM, os.X_OK):
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return f"{CHROMIUM} is missing and there is no apt-get to install it"
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            return f"{CHROMIUM} is missing; `apt-get install chromium` needs root"
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, apt, *args], env=env, capture_output=True, text=True, timeout=900
        )

    result = apt_get("install", "-y", "chromium")
    if result.returncode != 0:  # perhaps stale package lists
        apt_get("update")
        result = apt_get("install", "-y", "chromium")
    if not os.access(CHROMIUM, os.X_OK):
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"{CHROMIUM} is missing and `apt-get install -y chromium` failed: {last[0]}"
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The system Chromium, installed if needed."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    why = install_chromium()
    if why is not None:
        pytest.skip(why)
    return CHROMIUM


def history(app) -> None:
    """48 hours of earlier traffic, with a three-hour mail-server outage and its recovery,
    so the chart in the screenshot shows what it is for."""
    now = utcnow()
    with runtime(app).transaction() as session:
        services = [
            Service(
                source="whmcs",
                service_ref=str(3000 + i),
                username=f"mail{3000 + i}",
                product_id="1",
                addons={},
                aspect_times={},
                generation=1,
                applied_generation=1,
            )
            for i in range(12)
        ]
        session.add_all(services)
        session.flush()
        events, attempts = [], []
        for hour in range(47, 0, -1):
            at = now - timedelta(hours=hour, minutes=20)
            outage = 14 <= hour <= 16
            for n in range(1 + (hour * 7) % 4 + (3 if 17 <= hour <= 18 else 0)):
                service = services[(hour + n) % len(services)]
                events.append(
                    {
                        "source": "whmcs",
                        "webhook_id": f"msg_{uuid.uuid4().hex}",
                        "body_sha256": "0" * 64,
                        "native_event": "ChangePackage",
                        "action": "change_package",
                        "service_id": service.id,
                        "service_ref": service.service_ref,
                        "occurred_at": at,
                        "received_at": at + timedelta(minutes=n),
                        "payload": {},
                        "status": EventStatus.APPLIED,
                        "generation": 1,
                    }
                )
                attempts.append(
                    {
                        "service_id": service.id,
                        "generation": 1,
                        "worker": "history",
                        "started_at": at + timedelta(minutes=n),
                        "outcome": "retry" if outage else "applied",
                        "reason": "mailserver_unreachable" if outage else None,
                        "calls": [],
                    }
                )
        session.execute(insert(Event), events)
        session.execute(insert(Attempt), attempts)


def test_support_walk_in_a_real_browser(
    app, client, sim, live_url, chromium_path, config_tree, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    history(app)
    send(client, Action.CREATE, 1001)
    send(client, Action.CREATE, 1002, product=2)
    send(client, Action.SUSPEND, 1001)
    failed = send(client, Action.CREATE, 1003, product=77)
    assert (failed["status"], failed["reason"]) == ("failed", "unmapped_product")
    with runtime(app).transaction() as session:
        from bridge.models import StaffRole
        from bridge.support.staff import add_staff

        add_staff(session, OPERATOR, PASSWORD, StaffRole.OPERATOR, utcnow())
    shots = SCREENSHOTS if os.environ.get("BRIDGE_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15000)
            page.goto(f"{live_url}/admin/")
            expect(page).to_have_url(f"{live_url}/admin/login?next=/admin/")
            page.get_by_label("E-mail").fill(OPERATOR)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()

            expect(page.get_by_role("heading", name="Events", exact=True)).to_be_visible()
            expect(page.get_by_role("link", name="failed 1")).to_be_visible()
            page.screenshot(path=str(shots / "events.png"))

            page.get_by_role("link", name="The billing product has no tier").click()
            expect(page).to_have_url(f"{live_url}/admin/events/{failed['event_id']}")
            reason = page.locator("#reason")
            expect(reason).to_contain_text("The billing product has no tier")
            expect(reason).to_contain_text('product "77" of source "whmcs" has no tier')
            page.screenshot(path=str(shots / "event-detail.png"), full_page=True)

            # an operator maps product 77 in the config and restarts the bridge
            use_settings(app, fixed_settings(config_tree, 77, "business"))
            page.get_by_role("button", name="Retry", exact=True).click()

            expect(page.get_by_role("status")).to_have_text(
                "Retried: the mail server now matches the billing system."
            )
            expect(page.locator("h1 .badge")).to_have_text("applied")
            # the page shows the last read of the account; reading again is a button
            page.get_by_role("button", name="Refresh from the mail server").click()
            expect(
                page.get_by_text("In sync: as of that read, a reconcile would change nothing.")
            ).to_be_visible()
            expect(page.locator("#reason")).to_have_count(0)
        finally:
            browser.close()
    account = sim.account("mail1003")
    assert account is not None and account["quota_mailboxes"] == 25
