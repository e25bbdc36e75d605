-- Statistics in non-identifiable form (flows/statistics.py). One REPEATABLE
-- READ transaction per run: the cut-off is its start.
--
-- Cells are (type, component, unit, period_start, group), group NULL for all
-- subjects. A subject in several groups counts once in the all-subjects cell
-- and once in each of its groups. The exact cells stream out unordered
-- (statistics_values) and flows.cells aggregates them: expanding every
-- reading to its subject's groups here and sorting that for percentile_cont
-- costs minutes at 5M readings on two cores. The DP contributions are per
-- subject and cell first, so their expansion to groups stays small.

-- name: statistics_create_temp
CREATE TEMP TABLE IF NOT EXISTS stat_consents (
    subject_id  uuid NOT NULL,
    provider_id uuid,
    types       text[]
) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS stat_subjects (
    subject_id  uuid PRIMARY KEY,
    sidx        integer NOT NULL,        -- a small number for the stream of values
    groups      text[] NOT NULL          -- NULL (all subjects) first, then each group
) ON COMMIT DROP

-- name: statistics_work_mem
SET LOCAL work_mem = '64MB'

-- name: statistics_cutoff
SELECT now()

-- name: statistics_consents
-- Unwithdrawn research consents covering the cut-off of subjects with no
-- unlifted research objection; FI residents only in region FI; nobody being
-- erased.
INSERT INTO stat_consents (subject_id, provider_id, types)
SELECT c.subject_id, c.provider_id, c.types
FROM consents c
JOIN subjects s ON s.subject_id = c.subject_id
WHERE c.purpose = 'research'
  AND c.valid_from <= %(cutoff)s AND %(cutoff)s < c.valid_until
  AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w WHERE w.consent_id = c.consent_id)
  AND s.status <> 'erasing'
  AND (s.residency = %(region)s OR %(region)s = 'FI')
  AND NOT EXISTS (
      SELECT 1 FROM objections o
      WHERE o.subject_id = c.subject_id AND o.purpose = 'research'
        AND NOT EXISTS (SELECT 1 FROM objection_lifts l WHERE l.objection_id = o.objection_id))

-- name: statistics_subjects
-- Each eligible subject's groups at the cut-off: open memberships still
-- backed by an unwithdrawn analytics consent (groups exist only under it).
INSERT INTO stat_subjects (subject_id, sidx, groups)
SELECT e.subject_id, row_number() OVER (ORDER BY e.subject_id),
       array_prepend(NULL::text, coalesce(
           (SELECT array_agg(DISTINCT g.group_key ORDER BY g.group_key)
            FROM group_memberships g
            WHERE g.subject_id = e.subject_id
              AND g.valid_from <= %(cutoff)s
              AND (g.valid_until IS NULL OR g.valid_until > %(cutoff)s)
              AND EXISTS (
                  SELECT 1 FROM consents c
                  WHERE c.subject_id = g.subject_id AND c.purpose = 'analytics'
                    AND c.valid_from <= %(cutoff)s AND %(cutoff)s < c.valid_until
                    AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w
                                    WHERE w.consent_id = c.consent_id))),
           '{}'::text[]))
FROM (SELECT DISTINCT subject_id FROM stat_consents) e

-- name: statistics_subject_groups
-- Each eligible subject's number and groups (NULL first: all subjects).
SELECT sidx, groups FROM stat_subjects ORDER BY sidx

-- name: statistics_values
-- Exact cells: every reading the research consent covers (types, provider),
-- valid, stored by the cut-off, never geoposition or coordinates, as four
-- numbers: its series (0-based position of type|component|unit in the
-- series parameter), its period (first day, as days since 1970-01-01), its
-- subject's number and its value. Unordered: flows.cells aggregates it in
-- two passes of the same snapshot.
COPY (
    SELECT array_position(%(series)s::text[], r.type || '|' || r.component || '|' || r.unit) - 1,
           date_trunc(%(period)s, r.effective_time AT TIME ZONE 'UTC')::date - DATE '1970-01-01',
           s.sidx,
           r.value
    FROM readings r
    JOIN stat_subjects s ON s.subject_id = r.subject_id
    WHERE NOT r.erroneous
      AND r.type <> 'geoposition'
      AND r.component NOT IN ('latitude', 'longitude')
      AND r.effective_time <= %(cutoff)s
      AND r.received_at <= %(cutoff)s
      AND array_position(%(series)s::text[], r.type || '|' || r.component || '|' || r.unit)
          IS NOT NULL
      AND EXISTS (SELECT 1 FROM stat_consents c
                  WHERE c.subject_id = r.subject_id
                    AND (c.provider_id IS NULL OR c.provider_id = r.provider_id)
                    AND (c.types IS NULL OR r.type = ANY (c.types)))
) TO STDOUT (FORMAT csv)

-- name: statistics_contributions
-- Differential privacy: each subject's contribution to each cell, bounded.
-- Per subject and cell, at most max_readings readings count, each value
-- clamped to its component's bounds (bounds: component -> [lo, hi]); the
-- subject's clamped mean times those readings, centred and scaled to
-- [-1, 1] per reading, is its share of the cell's sum. A subject contributes
-- to at most max_cells cells, chosen at random (keyed by the run's salt).
-- So adding or removing one person changes: the cells' subject counts by at
-- most max_cells in total (1 each), their reading counts and scaled sums by
-- at most max_cells * max_readings in total.
WITH bounds AS (
    SELECT b.key AS component, (b.value ->> 0)::float8 AS lo, (b.value ->> 1)::float8 AS hi
    FROM jsonb_each(%(bounds)s::jsonb) AS b
),
per_subject AS (
    SELECT r.subject_id, r.type, r.component, r.unit,
           date_trunc(%(period)s, r.effective_time AT TIME ZONE 'UTC')::date AS period_start,
           least(count(*), %(max_readings)s) AS n,
           avg(greatest(b.lo, least(b.hi, r.value))) AS mean_clamped,
           min(b.lo) AS lo, min(b.hi) AS hi
    FROM readings r
    JOIN stat_subjects s ON s.subject_id = r.subject_id
    JOIN bounds b ON b.component = r.component
    WHERE NOT r.erroneous
      AND r.type <> 'geoposition'
      AND r.component NOT IN ('latitude', 'longitude')
      AND r.effective_time <= %(cutoff)s
      AND r.received_at <= %(cutoff)s
      AND EXISTS (SELECT 1 FROM stat_consents c
                  WHERE c.subject_id = r.subject_id
                    AND (c.provider_id IS NULL OR c.provider_id = r.provider_id)
                    AND (c.types IS NULL OR r.type = ANY (c.types)))
    GROUP BY r.subject_id, r.type, r.component, r.unit, 5
),
cells AS (
    SELECT p.*, g.group_key,
           row_number() OVER (
               PARTITION BY p.subject_id
               ORDER BY md5(%(salt)s || p.subject_id::text || p.component || p.period_start::text
                            || coalesce(g.group_key, ''))
           ) AS pick
    FROM per_subject p
    JOIN stat_subjects s ON s.subject_id = p.subject_id
    CROSS JOIN LATERAL unnest(s.groups) AS g(group_key)
)
SELECT type, component, unit, period_start, group_key AS "group",
       count(*) AS subjects,
       sum(n)::bigint AS n,
       sum(n * (mean_clamped - (lo + hi) / 2) / ((hi - lo) / 2)) AS sum_scaled
FROM cells
WHERE pick <= %(max_cells)s
GROUP BY type, component, unit, period_start, group_key
ORDER BY type, component, period_start, group_key NULLS FIRST

-- name: statistics_insert
INSERT INTO statistics_runs (statistics_id, region, period, min_subjects, epsilon, cutoff,
                             path, cells, suppressed_cells, created_by)
VALUES (%(statistics_id)s, %(region)s, %(period)s, %(min_subjects)s, %(epsilon)s,
        %(cutoff)s, %(path)s, %(cells)s, %(suppressed_cells)s, %(actor)s)

-- name: privacy_ledger_lock
-- One spender per dataset at a time: the budget check and the spend commit together.
SELECT pg_advisory_xact_lock(hashtext('vitals.privacy_ledger:' || %(dataset)s))

-- name: privacy_ledger_spent
SELECT coalesce(sum(epsilon), 0) AS epsilon, coalesce(sum(delta), 0) AS delta, count(*) AS runs
FROM privacy_ledger WHERE dataset = %(dataset)s

-- name: privacy_ledger_insert
INSERT INTO privacy_ledger (dataset, release_id, epsilon, delta, mechanism, spent_by)
VALUES (%(dataset)s, %(release_id)s, %(epsilon)s, %(delta)s, %(mechanism)s, %(actor)s)
