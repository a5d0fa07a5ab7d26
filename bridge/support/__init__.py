"""What the staff faces share (console, JSON API, CLI): actions, ledger queries, reason
texts, the audit log, staff accounts, desired-vs-actual, the importer and health checks.
The faces only render; everything they decide lives here."""
