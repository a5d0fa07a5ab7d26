"""Provisioning: desired state -> planned calls -> a mail server that matches.

desired.py freezes what a service should be; reconcile.py plans and runs the calls (pure
planner); outcome.py records how a reconcile ended; jobs.py claims services and drives them;
worker.py is the `bridge worker` loop.
"""
