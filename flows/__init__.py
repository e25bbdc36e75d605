"""vitals: flows."""
