-- TimescaleDB only: erasure refreshes the continuous aggregates at once (the
-- erased subject's daily rows go with their readings), but only a view's
-- owner may refresh it, and the application connects as vitals_app, which
-- owns nothing. The aggregates are handed to vitals_aggregates, a NOLOGIN
-- role that owns them and may read readings, and vitals_app may SET ROLE to
-- it (vitals_app is NOINHERIT: it holds none of its rights until it does).
DO $$
DECLARE
    v record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitals_aggregates') THEN
        BEGIN
            CREATE ROLE vitals_aggregates NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
                NOINHERIT NOREPLICATION NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- another database's migrator created it meanwhile
        END;
    END IF;
    GRANT USAGE ON SCHEMA public TO vitals_aggregates;
    GRANT SELECT ON readings TO vitals_aggregates;
    FOR v IN
        SELECT view_schema, view_name FROM timescaledb_information.continuous_aggregates
        WHERE hypertable_name = 'readings'
    LOOP
        EXECUTE format('ALTER MATERIALIZED VIEW %I.%I OWNER TO vitals_aggregates',
                       v.view_schema, v.view_name);
        EXECUTE format('GRANT SELECT ON %I.%I TO vitals_app', v.view_schema, v.view_name);
    END LOOP;
    GRANT vitals_aggregates TO vitals_app;
END $$;
