-- `vitals demo` (store/demo.py, run by demo/): a fresh database on a local
-- server, whether every sent reading is committed or refused, and the counts
-- of its report. {db} is a database name as a psycopg.sql.Identifier. The
-- last query runs in DuckDB on the EU export, not here; {readings} is the glob
-- of its Parquet files.

-- name: demo_drop_database
DROP DATABASE IF EXISTS {db} WITH (FORCE)

-- name: demo_create_database
CREATE DATABASE {db}

-- name: demo_settled
-- Readings stored (one per provider reading id and time, whatever its
-- components) plus readings refused.
SELECT (SELECT count(*) FROM (SELECT DISTINCT provider_id, reading_id, effective_time
                              FROM readings) r)
     + (SELECT count(*) FROM rejections)

-- name: demo_accepted
SELECT count(DISTINCT (provider_id, reading_id, effective_time)) FROM readings

-- name: demo_refused_by_reason
SELECT reason, count(*) FROM rejections GROUP BY 1 ORDER BY 2 DESC

-- name: demo_refused_by_transport
SELECT transport, count(*) FROM rejections GROUP BY 1

-- name: demo_current_groups
SELECT group_key, count(*) FROM group_memberships WHERE valid_until IS NULL GROUP BY 1 ORDER BY 1

-- name: demo_stored_per_second
-- One-second bins from the time the simulator started.
SELECT date_bin('1 second', received_at, %(t)s) AS b, count(*)
FROM (SELECT DISTINCT provider_id, reading_id, effective_time, received_at FROM readings) r
GROUP BY 1 ORDER BY 1

-- name: demo_refused_per_second
SELECT date_bin('1 second', received_at, %(t)s), count(*) FROM rejections GROUP BY 1

-- name: demo_duckdb_export_summary
SELECT type, component, unit, count(*) AS n, round(avg(value), 1) AS mean
FROM read_parquet('{readings}', hive_partitioning=false)
GROUP BY ALL ORDER BY n DESC
