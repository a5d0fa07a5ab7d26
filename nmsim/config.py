"""Runtime configuration and the injectable clock of the simulator."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any

from nmsim.profiles import profile_names, profile_switches

DEFAULT_MASTER = "admin:Sim-Master-Passw0rd"

FAULT_KINDS = (
    "html_500",
    "html_502",
    "html_503",
    "html_504",
    "json_500",
    "error_200",
    "rate_limit",
    "drop",
    "latency",
)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclass
class SimConfig:
    """Behaviour switches that tests may change at run time through /_sim/config.

    Each is described under "Runtime config" in nmsim/README.md.
    """

    profile: str = "documented"
    rate_limit: float = 20.0
    rate_limit_status: int = 429
    ban_after: int = 10
    ban_window: float = 60.0
    ban_seconds: float = 3600.0
    ban_status: int = 429
    token_ttl: int = 86400
    quota_below_usage: str = "reject"
    count_pending: bool = True
    require_verified: bool = True
    exclusive_domains: bool = False
    cascade_delete_domains: bool = True
    unlimited_sentinel: int | None = None
    create_status: int = 200
    verification_ttl: int = 604800
    latency_ms: int = 0
    error_rate: float = 0.0
    error_kind: str = "html_500"
    error_seed: int = 0
    request_log_max: int = 10000
    empty_search_status: int = 200
    single_token: bool = False
    cascade_delete_route: bool = True
    zero_unlimited: bool = False
    lowercase_names: bool = False
    usage_fields: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Validate and apply a partial update; nothing changes when a value is invalid.

        A `profile` key first sets every profile switch (nmsim/profiles.py) to that profile's
        value; the other keys of the same update apply after it.
        """
        trial = dataclasses.replace(self)
        if "profile" in changes:
            try:
                switches = profile_switches(changes["profile"])
                names = profile_names(changes["profile"])
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            for key, value in switches.items():
                _set_checked(trial, key, value)
            trial.profile = ",".join(names)
        for key, value in changes.items():
            if key != "profile":
                _set_checked(trial, key, value)
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(trial, f.name))


_CHOICES: dict[str, tuple[Any, ...]] = {
    "rate_limit_status": (429, 503),
    "ban_status": (403, 429),
    "empty_search_status": (200, 204, 404),
    "quota_below_usage": ("reject", "allow"),
    "create_status": (200, 201),
    "error_kind": FAULT_KINDS,
}


def _set_checked(cfg: SimConfig, key: str, value: Any) -> None:
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if key not in fields:
        raise ConfigError(f"unknown config key {key!r}")
    current = getattr(SimConfig(), key)
    if key == "unlimited_sentinel":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError("unlimited_sentinel must be an int or null")
    elif isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be a boolean")
    elif isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{key} must be a number >= 0")
        value = float(value)
    elif isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{key} must be an int >= 0")
    elif isinstance(current, str) and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{key} must be one of {list(_CHOICES[key])}")
    if key == "error_rate" and value > 1:
        raise ConfigError("error_rate must be between 0 and 1")
    setattr(cfg, key, value)


class SimClock:
    """Wall-clock time plus an adjustable offset, optionally frozen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen: float | None = None

    def now(self) -> float:
        """Return the simulated current time in UNIX seconds."""
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return time.time() + self._offset

    def set(self, when: float) -> None:
        """Jump to an absolute UNIX time (keeps running unless frozen)."""
        with self._lock:
            if self._frozen is not None:
                self._frozen = float(when)
            else:
                self._offset = float(when) - time.time()

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, for negative values)."""
        with self._lock:
            if self._frozen is not None:
                self._frozen += seconds
            else:
                self._offset += seconds

    def freeze(self, frozen: bool) -> None:
        """Stop or restart the clock at its current value."""
        with self._lock:
            if frozen and self._frozen is None:
                self._frozen = time.time() + self._offset
            elif not frozen and self._frozen is not None:
                self._offset = self._frozen - time.time()
                self._frozen = None

    def reset(self) -> None:
        """Return to plain wall-clock time."""
        with self._lock:
            self._offset = 0.0
            self._frozen = None

    def to_dict(self) -> dict[str, Any]:
        """Describe the clock for /_sim/clock."""
        now = self.now()
        with self._lock:
            return {"now": now, "frozen": self._frozen is not None, "offset": self._offset}
