"""The staff JSON API under /api/ (bearer staff tokens), described at /api/openapi.json."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from bridge.api import views  # noqa: E402,F401  (routes register on bp)
