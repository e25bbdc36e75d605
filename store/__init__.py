"""vitals: store, PostgreSQL (the only package that imports psycopg).

Pool and named queries (db), the migrator, the writer; the SQL ships inside
the package (sql/migrations, sql/queries) and is read through
importlib.resources, so an installed package finds it.
"""
