"""WSGI entry point: `gunicorn wsgi:app`.

Under gunicorn.conf.py the master process has read and checked the config before forking
this worker (at start and on every SIGHUP): the worker serves those settings.
"""

from bridge import create_app
from bridge.config import served

app = create_app(served())
