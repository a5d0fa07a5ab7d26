"""gunicorn settings for the bridge (`gunicorn --config gunicorn.conf.py wsgi:app`)."""

import os

bind = os.environ.get("BRIDGE_BIND", "127.0.0.1:8000")
# Threads, not just processes: a WHMCS module call may wait on the mail server
# (inline apply, up to intake.inline_timeout_s) and must not block other hooks.
worker_class = "gthread"
workers = int(os.environ.get("BRIDGE_WORKERS", "2"))
threads = int(os.environ.get("BRIDGE_THREADS", "8"))
timeout = 60
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
