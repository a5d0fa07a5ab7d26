"""`python -m bench` (what `make bench` runs): every benchmark in turn, one result line each.

Each benchmark runs in its own process, on its own simulator and database, and prints lines
of the form `name  figure unit  ratio R vs <reference measured in the same run>`.
`--record` also writes bench/RESULTS.md with the machine, the date and the commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEPT_FROM = "\n## Notes"
BENCHES = {
    "intake": "intake per kind of event vs a minimal Flask endpoint (HMAC, C SHA512-crypt, one "
    "INSERT), intake while /api/events is polled, web worker RSS",
    "calls": "mail-server calls per lifecycle action, and for duplicate deliveries",
    "drain": "drain time of queued suspends vs calls / rate, and 429s, worker RSS",
    "growth": "intake and the staff pages with 1,000,000 stored events vs nearly empty "
    "(long: only with --growth or by name)",
    "loginflood": "intake p50 idle vs under a 48-thread login flood (and a control flood), "
    "on one server and on the deployed split",
}
LOAD: dict[str, str] = {}  # the load average when each benchmark started
#: Left out of the default run: named, or added with --growth.
LONG = {"growth"}


def machine() -> str:
    """One line about the machine the figures come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


#: Which benchmark each result line comes from, by the start of its name.
PREFIXES = {
    "intake": ("intake.", "web."),
    "calls": ("calls.",),
    "drain": ("drain.", "worker."),
    "growth": ("growth.",),
    "loginflood": ("loginflood.",),
}
RUNS, FIGURES = "\n## Runs\n", "\n## Figures\n"


def bench_of(line: str) -> str | None:
    """The benchmark a row of the figures table (`| name | ...`) belongs to."""
    name = line.strip("| ").split(" |")[0]
    return next((b for b, starts in PREFIXES.items() if name.startswith(starts)), None)


def table_rows(text: str, heading: str) -> list[str]:
    """The body rows of the first table after `heading` (none when it is missing)."""
    section = text.partition(heading)[2].partition("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return rows[1:]  # the header row; the |---| line does not start with "| "


def record(results: list[dict], took: dict[str, float], started: dict[str, str]) -> None:
    """Write bench/RESULTS.md: this run's rows replace those of the benchmarks it ran, the
    others' rows (and their run line) are kept, as is the hand-written Notes section."""
    target = HERE / "RESULTS.md"
    old = target.read_text(encoding="utf-8") if target.exists() else ""
    shown = {"name", "value", "unit", "ratio", "versus"}
    new_rows = {
        name: [
            "| {name} | {value:.2f} {unit} | {ratio} | {versus} | {details} |".format(
                **{
                    **r,
                    "ratio": "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}",
                    "details": ", ".join(f"{k} {v}" for k, v in r.items() if k not in shown),
                }
            )
            for r in results
            if bench_of(f"| {r['name']} |") == name
        ]
        for name in took
    }
    runs = {row.strip("| ").split(" |")[0]: row for row in table_rows(old, RUNS)}
    for name, secs in took.items():
        runs[name] = f"| {name} | {started[name]} | {commit()} | {secs:.0f} s | {LOAD[name]} |"
    figures = []
    for name in BENCHES:
        if name in new_rows:
            figures += new_rows[name]
        else:
            figures += [row for row in table_rows(old, FIGURES) if bench_of(row) == name]
    text = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.",
        "",
        "Each ratio is the figure divided by its reference, measured in the same run; "
        "whatever else runs on the machine shows in every figure (the load average at "
        "each benchmark's start is in the runs table).",
        RUNS,
        "| benchmark | started (UTC) | commit | took | load average (1, 5, 15 min) |",
        "|---|---|---|---|---|",
        *[runs[name] for name in BENCHES if name in runs],
        FIGURES,
        "| measurement | figure | ratio | reference | details |",
        "|---|---|---|---|---|",
        *figures,
        "",
    ]
    # Hand-written sections (the soak's runs, how to read the figures) are kept.
    kept = old.partition(KEPT_FROM)
    if kept[1]:
        text += [KEPT_FROM + kept[2].rstrip("\n"), ""]
    target.write_text("\n".join(text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks (minutes; not part of `make test`). "
        + "; ".join(f"{k}: {v}" for k, v in BENCHES.items()),
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"of {', '.join(BENCHES)} (default: all but {', '.join(sorted(LONG))})",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="write bench/RESULTS.md (the figures of the benchmarks not run are kept)",
    )
    parser.add_argument(
        "--growth",
        action="store_true",
        help="also run the growth benchmark (1,000,000 events seeded: adds minutes)",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}"
        )
    names = args.names or [n for n in BENCHES if n not in LONG or args.growth]
    if args.growth and "growth" not in names:
        names.append("growth")
    failed: list[str] = []
    took: dict[str, float] = {}
    started_at: dict[str, str] = {}
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as results_file:
        env = {**os.environ, "BENCH_RESULTS": results_file.name}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        for name in names:
            print(f"# {name}: {BENCHES[name]}", flush=True)
            LOAD[name] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            started_at[name] = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
            started = time.monotonic()
            code = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, env=env)
            took[name] = time.monotonic() - started
            if code.returncode != 0:
                failed.append(name)
        results = [json.loads(line) for line in Path(results_file.name).read_text().splitlines()]
    if args.record and not failed:
        record(results, took, started_at)
        print("# wrote bench/RESULTS.md")
    if failed:
        print(f"# FAILED: {', '.join(failed)} (see the lines above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
