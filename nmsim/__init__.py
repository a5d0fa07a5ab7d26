"""NMS simulator: a local stand-in for the Mailcheap NMS API v1 (see nmsim/README.md)."""

from __future__ import annotations

from nmsim.app import create_app

__all__ = ["create_app"]
