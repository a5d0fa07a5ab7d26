"""The support staff console under /admin/: server-rendered pages, no JavaScript needed."""

from __future__ import annotations

from flask import Blueprint
from flask.blueprints import BlueprintSetupState

bp = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
)


@bp.record_once
def _cookie_settings(state: BlueprintSetupState) -> None:
    # The session cookie carries the console login: never sent on cross-site POSTs.
    if not state.app.config.get("SESSION_COOKIE_SAMESITE"):
        state.app.config["SESSION_COOKIE_SAMESITE"] = "Lax"


from bridge.admin import views  # noqa: E402,F401  (routes register on bp)
