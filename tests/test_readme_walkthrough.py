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

import base64
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass
class Instance:
    """One `make run` in its own folder: the environment its shell commands get, its log."""

    env: dict[str, str]
    folder: Path
    log: Path
    #: Wait until the bridge and the simulator answer.
    ready: Callable[[], object] = lambda: None

    def url(self, name: str = "BRIDGE_PORT") -> str:
        return f"http://127.0.0.1:{self.env[name]}"


def own_config(folder: Path) -> None:
    """config.yaml: the example with secrets of its own. If `make run` read another file than
    the `bridge` commands (it once forced the example), every signature would be refused."""
    text = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    for name in ("WHMCS_WEBHOOK_SECRET", "BLESTA_WEBHOOK_SECRET"):
        fresh = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        text, count = re.subn(rf"\$\{{{name}:-whsec_[^}}]+\}}", fresh, text)
        assert count == 1, name
    (folder / "config.yaml").write_text(text, encoding="utf-8")


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[Callable[[str], Instance]]:
    """Start `make run` in a new folder on free ports (`ready()` waits for it); each is
    stopped at the end through its process group."""
    running: list[subprocess.Popen[bytes]] = []
    taken: set[int] = set()

    def start(name: str) -> Instance:
        folder = tmp_path / name
        folder.mkdir()
        for file in FILES:
            (folder / file).symlink_to(ROOT / file)
        own_config(folder)
        ports = {}
        for var in ("BRIDGE_PORT", "NMSIM_PORT"):
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            ports[var] = str(port)
        unset = ("BRIDGE_CONFIG", "BRIDGE_URL", "BRIDGE_BIND", "NMS_BASE_URL", "MAKEFLAGS")
        env = {k: v for k, v in os.environ.items() if k not in unset and k != "MAKELEVEL"}
        instance = Instance(env | ports, folder, folder / "make-run.log")
        with instance.log.open("wb") as log:
            proc = subprocess.Popen(
                ["make", "run"],
                cwd=folder,
                env=instance.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        running.append(proc)

        def up() -> bool:
            assert proc.poll() is None, instance.log.read_text(errors="replace")
            try:
                for var in ports:
                    requests.get(f"{instance.url(var)}/healthz", timeout=5)
            except requests.RequestException:
                return False
            return True

        instance.ready = lambda: wait_until(up, 120, f"make run in {name} to serve")
        return instance

    try:
        yield start
    finally:
        for proc in running:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def shell(instance: Instance, command: str) -> subprocess.CompletedProcess[str]:
    """A command in the instance's folder, as typed in the second shell."""
    return subprocess.run(
        ["bash", "-c", command],
        cwd=instance.folder,
        env=instance.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=120,
    )


ONLY_SQLITE = pytest.mark.skipif(
    bool(os.environ.get("BRIDGE_TEST_DATABASE_URL")),
    reason="make run keeps its own SQLite database: the SQLite leg runs this once",
)


@ONLY_SQLITE
def test_the_readme_walkthrough_as_written(make_run):
    instance = make_run("clone")
    instance.ready()
    here = {"8000": instance.env["BRIDGE_PORT"], "8025": instance.env["NMSIM_PORT"]}

    def local(text: str) -> str:
        return re.sub(r"127\.0\.0\.1:(8000|8025)\b", lambda m: f"127.0.0.1:{here[m[1]]}", text)

    for command, expected in walkthrough((ROOT / "README.md").read_text(encoding="utf-8")):
        done = shell(instance, local(command))
        answer = done.stdout if done.stdout.endswith("\n") else done.stdout + "\n"  # curl
        assert pattern(local(expected)).fullmatch(answer), (
            f"$ {command}\n--- README says:\n{expected}--- it printed:\n{answer}"
        )
        failed = '"status": "failed"' in expected
        assert done.returncode == (1 if failed else 0), f"$ {command}\n{answer}"

    served = instance.log.read_text(errors="replace")
    # one config rule for every process, said at start; no Alembic chatter per worker
    assert served.count("config config.yaml (config.yaml in the working directory)") == 2
    assert "setup plugin" not in served
    assert "Traceback" not in served


@ONLY_SQLITE
def test_two_make_runs_side_by_side(make_run):
    first, second = make_run("first"), make_run("second")
    first.ready()
    second.ready()
    create = ".venv/bin/bridge hooks send whmcs create --service {}"
    assert '"status": "applied"' in shell(first, create.format(1001)).stdout
    assert '"status": "applied"' in shell(second, create.format(2002)).stdout
    for instance, own in ((first, "mail1001"), (second, "mail2002")):
        state = requests.get(f"{instance.url('NMSIM_PORT')}/_sim/state", timeout=10).json()
        accounts = {a["username"] for a in state["accounts"] if a["perm_level"] == "DomainAdmin"}
        assert accounts == {own}  # each bridge provisions into its own simulator
