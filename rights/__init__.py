"""Data-subject requests: access extract, correction, erasure, and the purge
of past exports that erasure, research withdrawal and residency correction
leave behind.

Plain functions the CLI, the admin API (role `dpo`) and the purge flow call;
every operation writes the audit log. The SQL they run is in `store.rights`;
what commits when is decided here, and in one way: every public function
commits its own work, on the connection it is given (`extract`, `correction`,
`purge.queue_pending`) or on one it opens from a URL (`erasure`, `purge`).

Imports store, schemas and core only: never flows, never ingest.
"""
