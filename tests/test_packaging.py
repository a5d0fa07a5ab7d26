"""The wheel `pip install .` builds: it must carry what the bridge opens from disk at run time
(migrations, console templates and static files) and declare its runtime dependencies."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        cwd=out,
        timeout=240,
    )
    (built,) = out.glob("mailbridge-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_carries_migrations_templates_and_static_files(wheel):
    names = set(wheel.namelist())
    versions = sorted(p.name for p in (ROOT / "bridge" / "migrations" / "versions").glob("*.py"))
    assert versions, "no migration found in the source tree"
    for version in versions:
        assert f"bridge/migrations/versions/{version}" in names
    assert "bridge/migrations/env.py" in names
    assert "bridge/migrations/script.py.mako" in names
    templates = sorted((ROOT / "bridge" / "admin" / "templates" / "admin").glob("*.html"))
    for template in templates:
        assert f"bridge/admin/templates/admin/{template.name}" in names
    assert "bridge/admin/static/admin.css" in names
    assert "nmsim/__main__.py" in names


def test_the_wheel_declares_the_runtime_dependencies(wheel):
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = Parser().parsestr(wheel.read(metadata).decode())
    required = {
        re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower()
        for r in message.get_all("Requires-Dist") or []
    }
    pinned = {
        line.split("==")[0].split("[")[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert pinned <= required, f"declared nowhere in pyproject.toml: {pinned - required}"


def test_the_wheel_has_the_bridge_command(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "bridge = bridge.cli:main" in wheel.read(entry_points).decode()
