"""WSGI entry points for gunicorn.

- `gunicorn wsgi:app`: the whole bridge on one server (webhooks, console, API); the console
  and the API are loaded on their first request.
- `gunicorn wsgi:hooks` and `gunicorn wsgi:staff`: the two faces on two servers, as
  deploy/mailbridge-web.service and mailbridge-staff.service run them, so that the console
  never competes with the webhooks.

Under gunicorn.conf.py the master process has read and checked the config before forking
this worker (at start and on every SIGHUP): the worker serves those settings.
"""

from typing import Any

from bridge import create_app
from bridge.config import served


def __getattr__(name: str) -> Any:
    # Built on first access (then kept), so `wsgi:hooks` builds the hooks face only.
    if name not in ("app", "hooks", "staff"):
        raise AttributeError(name)
    built = create_app(served(), faces="all" if name == "app" else name)
    globals()[name] = built
    return built
