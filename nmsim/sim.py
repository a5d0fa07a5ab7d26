"""The simulator container: one lock around config, clock, state, limiter, faults and log."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections import Counter, deque
from typing import Any

from nmsim.config import SimClock, SimConfig
from nmsim.faults import Faults
from nmsim.model import MASTER, Account, ApiError, State
from nmsim.security import RateLimiter, Token, hash_password, password_problem

STATE_FORMAT = 1


class RequestLog:
    """API requests seen (not control requests), with counters by route and status."""

    def __init__(self) -> None:
        self.entries: deque[dict[str, Any]] = deque()
        self.counts: Counter[tuple[str, str | None, int]] = Counter()
        self.seq = 0

    def add(self, entry: dict[str, Any], keep: int) -> None:
        """Record one request; keep at most `keep` entries (counters are never trimmed)."""
        self.seq += 1
        self.entries.append({"seq": self.seq, **entry})
        while len(self.entries) > keep:
            self.entries.popleft()
        self.counts[(entry["method"], entry["route"], entry["status"])] += 1

    def clear(self) -> None:
        """Forget entries and counters (the sequence number keeps growing)."""
        self.entries.clear()
        self.counts.clear()

    def to_dict(self, since: int = 0) -> dict[str, Any]:
        """Return entries after `since` plus all counters."""
        counts = [
            {"method": m, "route": r, "status": s, "count": n}
            for (m, r, s), n in sorted(self.counts.items(), key=lambda kv: repr(kv[0]))
        ]
        return {
            "entries": [e for e in self.entries if e["seq"] > since],
            "counts": counts,
            "total": sum(self.counts.values()),
            "last_seq": self.seq,
        }


def parse_master(value: str) -> tuple[str, str]:
    """Split and check a `USER:PASSWORD` MasterAdmin login."""
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("master must be USER:PASSWORD")
    problem = password_problem(password)
    if problem:
        raise ValueError(f"master password: {problem}")
    return user, password


class Simulator:
    """Everything one simulator instance holds; `lock` guards all of it."""

    def __init__(
        self,
        config: SimConfig,
        master: str,
        seed: dict[str, Any] | None,
        state_file: str | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.state_file = state_file
        self.startup_config = dataclasses.replace(config)
        self.config = config
        self.clock = SimClock()
        self.master_user, password = parse_master(master)
        self.master_hash = hash_password(password)
        self.startup_seed = seed
        self.state = State(self.config, self.clock)
        self.limiter = RateLimiter()
        self.faults = Faults()
        self.log = RequestLog()
        self.reset()
        if state_file and os.path.exists(state_file):
            self.load(state_file)

    def reset(self) -> None:
        """Return to the startup state: config, clock, objects, tokens, bans, faults, log."""
        with self.lock:
            self.config.update(self.startup_config.to_dict())
            self.clock.reset()
            self.state = State(self.config, self.clock)
            self.state.accounts[self.master_user] = Account(
                username=self.master_user,
                perm_level=MASTER,
                password_hash=self.master_hash,
                recovery_email="postmaster@nmsim.invalid",
            )
            self.limiter.clear()
            self.faults.clear(self.config.error_seed)
            self.log.clear()
            if self.startup_seed:
                self.state.seed(self.startup_seed)

    def snapshot(self) -> dict[str, Any]:
        """Objects (seed format, less the start-up MasterAdmin) and tokens, for the state file."""
        with self.lock:
            objects = self.state.dump()
            objects.pop("tokens")
            objects["accounts"] = [
                a for a in objects["accounts"] if a["username"] != self.master_user
            ]
            tokens = [
                {"auth_token": value, **dataclasses.asdict(token)}
                for value, token in self.state.tokens.tokens.items()
            ]
        return {"nmsim_state": STATE_FORMAT, "objects": objects, "tokens": tokens}

    def load(self, path: str) -> None:
        """Replace objects and tokens with those of a state file written by `save`.

        Raises ValueError with the reason when the file cannot be used.
        """
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if not isinstance(data, dict) or data.get("nmsim_state") != STATE_FORMAT:
                raise ValueError(f"not an nmsim state file (format {STATE_FORMAT})")
            tokens = [Token(t["username"], t["valid_from"], t["valid_to"]) for t in data["tokens"]]
            values = [str(t["auth_token"]) for t in data["tokens"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"state file {path}: {exc}") from exc
        with self.lock:
            self.reset()
            self.state.accounts = {self.master_user: self.state.accounts[self.master_user]}
            self.state.zones.clear()
            for kind in self.state.forwarders:
                self.state.forwarders[kind].clear()
            try:
                self.state.seed(data["objects"])
            except ApiError as exc:
                raise ValueError(f"state file {path}: {exc.message}") from exc
            order = [self.master_user, *(a["username"] for a in data["objects"]["accounts"])]
            accounts = self.state.accounts
            self.state.accounts = {name: accounts[name] for name in order}  # creation order
            self.state.tokens.tokens.update(zip(values, tokens, strict=True))

    def save(self) -> None:
        """Write the state file, if any, atomically: a temporary file, then os.replace."""
        if not self.state_file:
            return
        with self.lock:  # one writer at a time, and the file always matches some moment
            data = self.snapshot()
            tmp = f"{self.state_file}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_file)
