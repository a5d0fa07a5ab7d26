"""README.md's "Your first signed webhook", run as written: `make run` on free ports in a fresh
folder, then every `$ ` command of the section's console blocks in a shell, each answer
checked against the lines under it. The commands and answers are read from README.md, so
the README and this test cannot drift apart.

In the README `...` stands for text that differs from run to run: inside a line it matches
any text on that line, alone on a line it matches any number of lines. The only edit made
to the commands and answers is the port: 8000 and 8025 become the free ports `make run` was
given (BRIDGE_PORT, NMSIM_PORT), which the shell's `bridge` commands follow as well.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.provisioning.test_processes import wait_until

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Your first signed webhook"
#: What `make run` needs in its working directory; the rest comes from the installed package.
FILES = (
    ".venv",
    "Makefile",
    "gunicorn.conf.py",
    "wsgi.py",
    "config.example.yaml",
    "requirements.txt",
    "pyproject.toml",
)


def walkthrough(readme: str) -> list[tuple[str, str]]:
    """(command, expected answer) for every `$ ` line of the section's console blocks."""
    section = readme.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    steps = []
    for block in re.findall(r"^```console\n(.*?)^```", section, re.S | re.M):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, expected = chunk.partition("\n")
            steps.append((command, expected))
    return steps


def pattern(expected: str) -> re.Pattern[str]:
    """The expected answer as a regular expression (`...` as described above)."""
    parts = []
    for line in expected.splitlines():
        if line.strip() == "...":
            parts.append(r"(?:.*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.compile("".join(parts))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_walkthrough_parses_into_commands_and_answers():
    steps = walkthrough((ROOT / "README.md").read_text(encoding="utf-8"))
    commands = [command for command, _ in steps]
    assert len(commands) >= 10
    assert all(c.startswith((".venv/bin/bridge ", "curl ")) for c in commands), commands
    assert all(expected.strip() for _, expected in steps), "every command shows its answer"
    assert pattern("a ... b\n...\nend\n").fullmatch("a x y b\n1\n2\nend\n")
    assert not pattern("a ... b\n").fullmatch("a\nb\n")


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, Path]]:
    """`make run` in an empty folder on two free ports; stopped (its process group) at the end."""
    for name in FILES:
        (tmp_path / name).symlink_to(ROOT / name)
    ports = {"BRIDGE_PORT": str(free_port()), "NMSIM_PORT": str(free_port())}
    unset = ("BRIDGE_CONFIG", "BRIDGE_URL", "BRIDGE_BIND", "NMS_BASE_URL", "MAKEFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items() if k not in unset} | ports
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["make", "run"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text(errors="replace")
        try:
            for port in ports.values():
                requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        except requests.RequestException:
            return False
        return True

    try:
        wait_until(up, 120, "make run to serve the bridge and the simulator")
        yield env, tmp_path, log_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.skipif(
    bool(os.environ.get("BRIDGE_TEST_DATABASE_URL")),
    reason="make run keeps its own SQLite database: the SQLite leg runs this once",
)
def test_the_readme_walkthrough_as_written(make_run):
    env, folder, log = make_run
    here = {"8000": env["BRIDGE_PORT"], "8025": env["NMSIM_PORT"]}

    def local(text: str) -> str:
        return re.sub(r"127\.0\.0\.1:(8000|8025)\b", lambda m: f"127.0.0.1:{here[m[1]]}", text)

    for command, expected in walkthrough((ROOT / "README.md").read_text(encoding="utf-8")):
        done = subprocess.run(
            ["bash", "-c", local(command)],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=120,
        )
        answer = done.stdout if done.stdout.endswith("\n") else done.stdout + "\n"  # curl
        assert pattern(local(expected)).fullmatch(answer), (
            f"$ {command}\n--- README says:\n{expected}--- it printed:\n{answer}"
        )
        failed = '"status": "failed"' in expected
        assert done.returncode == (1 if failed else 0), f"$ {command}\n{answer}"

    served = log.read_text(errors="replace")
    # one config rule for every process, said once at start; no Alembic chatter per worker
    assert "config config.example.yaml (no config.yaml here, so the example)" in served
    assert "setup plugin" not in served
    assert "Traceback" not in served
