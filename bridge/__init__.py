"""The mail provisioning bridge: billing webhooks in, a matching NMS mail server out."""

from __future__ import annotations

from bridge.app import create_app

__all__ = ["create_app"]
