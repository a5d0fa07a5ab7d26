"""The webhook front door: `POST /hooks/<source>` and the connector endpoints (views.py)."""
