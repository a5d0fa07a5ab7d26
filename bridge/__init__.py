"""The mail provisioning bridge: billing webhooks in, a matching NMS mail server out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # `bridge.create_app` on first use: `bridge worker` and the other commands never load
    # Flask (about 9 MB) unless they serve.
    if name == "create_app":
        from bridge.app import create_app

        return create_app
    raise AttributeError(f"module 'bridge' has no attribute {name!r}")
