"""The routes, one module per noun; each imports `deps`, `errors` and `models`,
never another route module."""
