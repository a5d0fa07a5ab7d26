"""gunicorn settings for the bridge (`gunicorn --config gunicorn.conf.py wsgi:app`)."""

import os
import shutil
import tempfile
from pathlib import Path

bind = os.environ.get("BRIDGE_BIND", "127.0.0.1:8000")
# Threads, not just processes: a WHMCS module call may wait on the mail server
# (inline apply, up to intake.inline_timeout_s) and must not block other hooks.
worker_class = "gthread"
workers = int(os.environ.get("BRIDGE_WORKERS", "2"))
threads = int(os.environ.get("BRIDGE_THREADS", "8"))
timeout = 60
graceful_timeout = 30
accesslog = "-"
# The path without its query string (a query can carry what must not be kept: a token pasted
# into a URL, a customer's e-mail in a filter) and no Referer (which has queries too).
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
errorlog = "-"
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which
# two servers on one machine would fight over; systemd and signals manage this one.
control_socket_disable = True

# /metrics adds up the counters of every worker process: each writes them to files in this
# folder (prometheus-client multiprocess mode). It must be set before a worker imports the
# app, and must start empty, or a restarted server would report old counts.
# (A SIGHUP runs this file again: the folder made the first time stays ours.)
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mailbridge-metrics-")
    os.environ["MAILBRIDGE_OWN_METRICS_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
_own_metrics_dir = (
    os.environ.get("MAILBRIDGE_OWN_METRICS_DIR") == os.environ["PROMETHEUS_MULTIPROC_DIR"]
)


from gunicorn.glogging import Logger, SafeAtoms  # noqa: E402

from bridge.logging import escape_text  # noqa: E402  (after PROMETHEUS_MULTIPROC_DIR is set)


class EscapedAtoms(SafeAtoms):
    """Access-log fields with control characters escaped: the path is percent-decoded, so a
    `%0a` in a URL would otherwise start a forged log line."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        return escape_text(value) if isinstance(value, str) else value


class AccessLogger(Logger):
    """gunicorn's logger, with every access-log field escaped."""

    atoms_wrapper_class = EscapedAtoms


logger_class = AccessLogger


def on_starting(server):
    """Empty the metrics folder (an operator-chosen one may hold a previous run's files), then
    read the config once, here, before any worker starts."""
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()
    _read_config(server)


def on_reload(server):
    """SIGHUP (`systemctl reload`): read the config again before the new workers start. A
    broken file is refused with one log line and the workers keep the last good config."""
    _read_config(server)


def _read_config(server):
    from bridge.config import describe, load_config, reload_config, serve, served
    from bridge.errors import ConfigError

    current = served()
    if current is None:
        try:
            settings = load_config()
        except ConfigError as exc:
            raise RuntimeError(exc.message) from None  # gunicorn prints it and exits 1
        server.log.info("%s", describe(settings))
    else:
        settings, problem = reload_config(current)
        if problem is not None:
            server.log.error(
                "config reload refused, still serving %s: %s", describe(current), problem
            )
        else:
            server.log.info("config reloaded: %s", describe(settings))
    serve(settings)


def child_exit(server, worker):  # noqa: ARG001
    """Forget a finished worker's live gauges; its counters stay counted."""
    from bridge.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ARG001
    """Remove the folder this file created."""
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
