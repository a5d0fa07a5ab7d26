"""WSGI entry point: `gunicorn wsgi:app`."""

from bridge import create_app

app = create_app()
