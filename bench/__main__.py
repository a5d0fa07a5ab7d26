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
}
LOAD_AT_START = ", ".join(f"{x:.1f}" for x in os.getloadavg())
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


def record(results: list[dict], took: dict[str, float]) -> None:
    """Write bench/RESULTS.md from this run's result lines."""
    shown = {"name", "value", "unit", "ratio", "versus"}
    rows = [
        "| {name} | {value:.2f} {unit} | {ratio} | {versus} | {details} |".format(
            **{
                **r,
                "ratio": "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}",
                "details": ", ".join(f"{k} {v}" for k, v in r.items() if k not in shown),
            }
        )
        for r in results
    ]
    durations = ", ".join(f"{name} {secs:.0f} s" for name, secs in took.items())
    text = [
        "# Benchmark results",
        "",
        f"Run of `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}.",
        f"Machine: {machine()}.",
        f"Durations: {durations}.",
        f"Load average (1, 5, 15 min) at the start: {LOAD_AT_START}; whatever else runs on "
        "the machine shows in every figure.",
        "",
        "Each ratio is the figure divided by its reference, measured in the same run.",
        "",
        "| measurement | figure | ratio | reference | details |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    # Hand-written sections (the soak's runs, how to read the figures) are kept.
    target = HERE / "RESULTS.md"
    kept = target.read_text(encoding="utf-8").partition(KEPT_FROM) if target.exists() else ()
    if kept and kept[1]:
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
    parser.add_argument("--record", action="store_true", help="write bench/RESULTS.md")
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
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as results_file:
        env = {**os.environ, "BENCH_RESULTS": results_file.name}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        for name in names:
            print(f"# {name}: {BENCHES[name]}", flush=True)
            started = time.monotonic()
            code = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, env=env)
            took[name] = time.monotonic() - started
            if code.returncode != 0:
                failed.append(name)
        results = [json.loads(line) for line in Path(results_file.name).read_text().splitlines()]
    if args.record and not failed:
        record(results, took)
        print("# wrote bench/RESULTS.md")
    if failed:
        print(f"# FAILED: {', '.join(failed)} (see the lines above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
