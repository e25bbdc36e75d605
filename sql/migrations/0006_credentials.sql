-- Credentials: API tokens expire, and the application connects as a
-- least-privilege role instead of the owner of the schema.
-- Runs on plain PostgreSQL 15+ and on TimescaleDB alike.

-- Tokens expire (default 90 days; `vitals token create --expires-in DAYS`).
-- Tokens issued before this migration get 90 days from now.
ALTER TABLE api_tokens
    ADD COLUMN expires_at timestamptz NOT NULL DEFAULT (now() + INTERVAL '90 days');

-- vitals_app: the role api, mqtt and flows connect as. Roles are cluster-wide,
-- so it is created only when missing, NOLOGIN and without a password: the
-- operator gives it one (`vitals db app-role`, which reads
-- VITALS_APP_DATABASE_PASSWORD). It owns nothing and may not run DDL: it reads
-- and writes rows, and the append-only triggers on consents hold against it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitals_app') THEN
        BEGIN
            CREATE ROLE vitals_app NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
                NOINHERIT NOREPLICATION NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object THEN
            NULL;  -- another database's migrator created it meanwhile
        END;
    END IF;
END $$;

-- Nobody but the owner creates objects in public (the default since PostgreSQL 15).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO vitals_app;
-- CONNECT and TEMPORARY on the database come from PUBLIC (PostgreSQL's
-- default); a cluster that revoked them grants them to vitals_app itself.

-- Rows only: no TRUNCATE, REFERENCES or TRIGGER, and never ownership.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO vitals_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO vitals_app;
-- The migrator's record is read (readyz), never written, by the app.
REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM vitals_app;
-- Tables later migrations create get the same row privileges.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO vitals_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO vitals_app;
