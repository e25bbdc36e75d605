-- Flows: the rule evaluator for analytic user groups and a daily roll-up of
-- readings. Runs on plain PostgreSQL 15+; with TimescaleDB the roll-up is a
-- real-time continuous aggregate, otherwise a plain view with the same columns.

-- A rule condition is data (flows/rules_v1.json), evaluated here against one
-- subject's metrics (a jsonb object of numbers):
--   {"all": [cond, ...]} | {"any": [cond, ...]} | {"metric": name, "op": "<", "value": 120}
-- A metric that is missing (no data) never satisfies a comparison.
CREATE FUNCTION vitals_rule_holds(cond jsonb, metrics jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    part jsonb;
    v double precision;
    t double precision;
BEGIN
    IF cond ? 'all' THEN
        FOR part IN SELECT jsonb_array_elements(cond -> 'all') LOOP
            IF NOT coalesce(vitals_rule_holds(part, metrics), false) THEN
                RETURN false;
            END IF;
        END LOOP;
        RETURN true;
    ELSIF cond ? 'any' THEN
        FOR part IN SELECT jsonb_array_elements(cond -> 'any') LOOP
            IF coalesce(vitals_rule_holds(part, metrics), false) THEN
                RETURN true;
            END IF;
        END LOOP;
        RETURN false;
    END IF;
    v := (metrics ->> (cond ->> 'metric'))::double precision;
    t := (cond ->> 'value')::double precision;
    IF v IS NULL OR t IS NULL THEN
        RETURN false;
    END IF;
    RETURN CASE cond ->> 'op'
        WHEN '<' THEN v < t
        WHEN '<=' THEN v <= t
        WHEN '>' THEN v > t
        WHEN '>=' THEN v >= t
        WHEN '=' THEN v = t
        ELSE vitals_rule_error(cond)
    END;
END $$;

CREATE FUNCTION vitals_rule_error(cond jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION 'unknown rule operator in %', cond USING ERRCODE = 'invalid_parameter_value';
END $$;

-- Daily roll-up per subject, provider, type and component (UTC days), valid
-- readings only. Group derivation reads step totals and active days from it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $cagg$
            CREATE MATERIALIZED VIEW readings_daily
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '1 day', effective_time) AS day,
                   subject_id, provider_id, type, component,
                   count(*) AS n, sum(value) AS total
            FROM readings
            WHERE NOT erroneous
            GROUP BY 1, 2, 3, 4, 5
            WITH NO DATA
        $cagg$;
        -- No start offset: every invalidated day is refreshed, however old, so
        -- deleted (erased, retained-out) readings leave the aggregate too.
        PERFORM add_continuous_aggregate_policy('readings_daily',
            start_offset => NULL,
            end_offset => INTERVAL '1 hour',
            schedule_interval => INTERVAL '1 hour');
        PERFORM add_retention_policy('readings_daily', INTERVAL '3650 days',
                                     if_not_exists => true);
    ELSE
        CREATE VIEW readings_daily AS
        SELECT date_trunc('day', effective_time, 'UTC') AS day,
               subject_id, provider_id, type, component,
               count(*) AS n, sum(value) AS total
        FROM readings
        WHERE NOT erroneous
        GROUP BY 1, 2, 3, 4, 5;
    END IF;
END $$;

-- Retention and export scan memberships by subject.
CREATE INDEX IF NOT EXISTS group_memberships_subject_idx ON group_memberships (subject_id);
