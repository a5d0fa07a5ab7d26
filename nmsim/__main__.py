"""Command line: `python -m nmsim [options]` serves the simulator until interrupted."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nmsim.config import DEFAULT_MASTER, SimConfig
from nmsim.profiles import DESCRIPTIONS, PROFILES, profile_switches
from nmsim.server import serve
from nmsim.sim import parse_master


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `python -m nmsim`."""
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="python -m nmsim",
        description=(
            "Local simulator of the Mailcheap NMS HTTP API v1 (in-memory state). "
            "Serves /api/v1/... like an NMS server and, unless --no-control, test hooks "
            "under /_sim/ (reset, seed, state, requests, config, clock, verify, tokens, "
            "faults). See nmsim/README.md."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8025, help="port to bind, 0 = any free (default %(default)s)"
    )
    parser.add_argument(
        "--master",
        default=DEFAULT_MASTER,
        metavar="USER:PASSWORD",
        help="MasterAdmin login; the password must meet the NMS policy (default %(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=defaults.rate_limit,
        metavar="N",
        help="requests per second per client IP, token bucket; 0 disables (default %(default)s)",
    )
    parser.add_argument(
        "--token-ttl",
        type=int,
        default=defaults.token_ttl,
        metavar="SECONDS",
        help="auth token lifetime (default %(default)s)",
    )
    parser.add_argument(
        "--quota-below-usage",
        choices=("reject", "allow"),
        default=defaults.quota_below_usage,
        help="lowering a quota below current usage: reject with 409 or allow (default %(default)s)",
    )
    parser.add_argument(
        "--profile",
        default="documented",
        metavar="NAME[,NAME...]",
        help=(
            "behaviour where the NMS docs are silent (see --list-profiles); "
            "combine with commas (default %(default)s)"
        ),
    )
    parser.add_argument(
        "--list-profiles",
        action="store_true",
        help="print the profiles and what each does, then exit",
    )
    parser.add_argument(
        "--seed", metavar="FILE", help="JSON seed document applied at start and on every reset"
    )
    parser.add_argument(
        "--state-file",
        metavar="PATH",
        help=(
            "keep accounts, domains, forwarders and tokens across restarts: loaded at start "
            "when the file exists, rewritten atomically after every change; delete it to reset"
        ),
    )
    parser.add_argument(
        "--no-control", action="store_true", help="do not mount the /_sim/ test hooks"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="print one line per request to stderr"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the server and serve until Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_profiles:
        for name in PROFILES:
            print(f"{name:15} {DESCRIPTIONS[name]}")
        return 0
    try:
        profile_switches(args.profile)
    except ValueError as exc:
        parser.error(f"--profile: {exc}")
    try:
        user, password = parse_master(args.master)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rate_limit < 0 or args.token_ttl < 1:
        parser.error("--rate-limit must be >= 0 and --token-ttl >= 1")
    seed: Any = None
    if args.seed:
        with open(args.seed, encoding="utf-8") as fh:
            seed = json.load(fh)
    try:
        server, app = serve(
            args.host,
            args.port,
            access_log=args.access_log,
            master=args.master,
            control=not args.no_control,
            seed=seed,
            state_file=args.state_file,
            profile=args.profile,
            rate_limit=args.rate_limit,
            token_ttl=args.token_ttl,
            quota_below_usage=args.quota_below_usage,
        )
    except ValueError as exc:
        print(f"nmsim: {exc}; move or delete that file to start empty", file=sys.stderr)
        return 2
    url = f"http://{args.host}:{server.server_port}"
    print(f"nmsim listening on {url}", flush=True)
    print(f"MasterAdmin login: {user} / {password}", flush=True)
    if not args.no_control:
        print(f"control hooks: {url}/_sim/", flush=True)
    print(f"profile: {args.profile}", flush=True)
    if args.state_file:
        print(f"state file: {args.state_file} (delete it to start empty)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.extensions["nmsim"].save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
