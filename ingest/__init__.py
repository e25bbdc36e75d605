"""vitals: ingest."""
