-- Time-series features: TimescaleDB hypertable, compression and retention when
-- the extension is available; a plain table with a BRIN index otherwise.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('readings', 'effective_time',
                                  chunk_time_interval => INTERVAL '7 days',
                                  migrate_data => true);
        EXECUTE 'ALTER TABLE readings SET (timescaledb.compress, '
             || 'timescaledb.compress_segmentby = ''subject_id, type'', '
             || 'timescaledb.compress_orderby = ''effective_time'')';
        PERFORM add_compression_policy('readings', INTERVAL '30 days', if_not_exists => true);
        PERFORM add_retention_policy('readings', INTERVAL '3650 days', if_not_exists => true);
    ELSE
        CREATE INDEX readings_time_brin ON readings USING brin (effective_time);
    END IF;
END $$;
