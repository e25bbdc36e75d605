-- Retention (store/retention.py, run by flows/retention.py): every DELETE
-- takes a bounded chunk and commits, so a large backlog never holds long
-- locks or a huge transaction.
-- Chunks are chosen by the readings key, which works on plain tables and
-- TimescaleDB hypertables alike.

-- name: retention_has_timescale
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')

-- name: retention_drop_chunks
-- TimescaleDB: whole chunks older than every type's maximum age.
SELECT count(*) FROM drop_chunks('readings', older_than => %(before)s::timestamptz)

-- name: retention_readings_of_types
WITH doomed AS (
    SELECT provider_id, reading_id, component, effective_time
    FROM readings
    WHERE type = ANY (%(types)s) AND effective_time < %(before)s
    LIMIT %(chunk)s
)
DELETE FROM readings r USING doomed d
WHERE r.provider_id = d.provider_id AND r.reading_id = d.reading_id
  AND r.component = d.component AND r.effective_time = d.effective_time

-- name: retention_readings_of_other_types
-- Types without their own maximum age: the default.
WITH doomed AS (
    SELECT provider_id, reading_id, component, effective_time
    FROM readings
    WHERE NOT (type = ANY (%(types)s)) AND effective_time < %(before)s
    LIMIT %(chunk)s
)
DELETE FROM readings r USING doomed d
WHERE r.provider_id = d.provider_id AND r.reading_id = d.reading_id
  AND r.component = d.component AND r.effective_time = d.effective_time

-- name: retention_ended_subjects
-- Subjects whose relationship ended more than the grace period ago.
SELECT subject_id FROM subjects
WHERE relationship_end IS NOT NULL AND relationship_end < %(before)s
ORDER BY subject_id

-- name: retention_readings_of_subjects
WITH doomed AS (
    SELECT provider_id, reading_id, component, effective_time
    FROM readings
    WHERE subject_id = ANY (%(subjects)s)
    LIMIT %(chunk)s
)
DELETE FROM readings r USING doomed d
WHERE r.provider_id = d.provider_id AND r.reading_id = d.reading_id
  AND r.component = d.component AND r.effective_time = d.effective_time

-- name: retention_rejections
DELETE FROM rejections
WHERE rejection_id IN (
    SELECT rejection_id FROM rejections
    WHERE received_at < %(before)s OR subject_id = ANY (%(subjects)s)
    LIMIT %(chunk)s
)

-- name: retention_groups
-- Memberships of ended relationships, and ended memberships past the default age.
DELETE FROM group_memberships
WHERE membership_id IN (
    SELECT membership_id FROM group_memberships
    WHERE subject_id = ANY (%(subjects)s)
       OR (valid_until IS NOT NULL AND valid_until < %(before)s)
    LIMIT %(chunk)s
)
