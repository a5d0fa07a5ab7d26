"""Named sets of runtime switches for what the public NMS docs leave open.

`PROFILES` maps a profile name to the SimConfig switches it sets; `DESCRIPTIONS` gives one line
each. `documented` lists every switch a profile may touch, at its default value; each other
profile changes only the switches named in it, on top of `documented`. Profiles can be combined
("single-token,lowercase") unless two of them set one switch to different values. See
"Profiles" in nmsim/README.md.
"""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "documented": {
        "empty_search_status": 200,
        "single_token": False,
        "cascade_delete_route": True,
        "zero_unlimited": False,
        "lowercase_names": False,
        "ban_status": 429,
        "ban_after": 10,
        "ban_seconds": 3600.0,
        "usage_fields": True,
    },
    "empty-404": {"empty_search_status": 404},
    "empty-204": {"empty_search_status": 204},
    "single-token": {"single_token": True},
    "no-cascade": {"cascade_delete_route": False},
    "zero-unlimited": {"zero_unlimited": True},
    "lowercase": {"lowercase_names": True},
    "ban-403": {"ban_status": 403, "ban_after": 10, "ban_seconds": 3600.0},
    "no-usage": {"usage_fields": False},
}

DESCRIPTIONS: dict[str, str] = {
    "documented": (
        "the default: empty search 200 [], many tokens per user, cascade delete route, "
        "0 = zero, case kept, 429 + Retry-After (bans too), *_used fields present"
    ),
    "empty-404": "an account search with no match (or a start past the end) answers 404",
    "empty-204": "an account search with no match (or a start past the end) answers 204, no body",
    "single-token": "a new login invalidates every earlier token of that user (401)",
    "no-cascade": "DELETE accounts/cascade/domainadmin/<u>/ is missing: 404 like an unknown route",
    "zero-unlimited": "a quota of 0 means unlimited (it still reads back as 0)",
    "lowercase": "usernames and recovery e-mails are stored and read back lower-cased",
    "ban-403": "an IP banned after repeated rate-limit excess gets 403 ip_banned + Retry-After",
    "no-usage": "the *_used counters are absent from account rows and stats/quota",
}


def profile_names(value: Any) -> list[str]:
    """Parse a profile value ("a,b" or ["a", "b"]) into known names; ValueError otherwise."""
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, list) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value]
    else:
        raise ValueError("profile must be a name, a comma-separated list or a list of names")
    if not names:
        raise ValueError(f"profile must name at least one of {', '.join(PROFILES)}")
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        raise ValueError(f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(PROFILES)}")
    return names


def profile_switches(value: Any) -> dict[str, Any]:
    """Return the switches of one or more profiles, on top of `documented`.

    Raises ValueError for an unknown name or two profiles that disagree on a switch.
    """
    names = profile_names(value)
    switches = dict(PROFILES["documented"])
    chosen: dict[str, tuple[str, Any]] = {}
    for name in names:
        if name == "documented":
            continue  # the base every profile starts from
        for key, setting in PROFILES[name].items():
            if key in chosen and chosen[key][1] != setting:
                raise ValueError(
                    f"profiles {chosen[key][0]} and {name} disagree on {key}; choose one"
                )
            chosen[key] = (name, setting)
            switches[key] = setting
    return switches
