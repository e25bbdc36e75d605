"""The SQL of vitals, shipped as package data: `migrations/NNNN_name.sql` (forward only,
recorded by `store.migrate`) and `queries/*.sql` (named `-- name: x` blocks, loaded once by
`store.db`). Only `store/` reads these files, through importlib.resources."""
