-- Analytic user groups (flows/groups.py). One run = one transaction:
-- eligible subjects -> metrics -> matches (rule set as a jsonb parameter,
-- evaluated by vitals_rule_holds) -> end / start memberships. History is kept:
-- a membership ends (valid_until, end_reason), it is never overwritten.

-- name: groups_lock
SELECT pg_advisory_xact_lock(hashtext('vitals.flows.groups'))

-- name: groups_create_temp
CREATE TEMP TABLE IF NOT EXISTS group_eligible (
    subject_id  uuid NOT NULL,
    provider_id uuid,
    types       text[]
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS group_metrics (
    subject_id  uuid PRIMARY KEY,
    metrics     jsonb NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS group_matches (
    subject_id  uuid NOT NULL,
    group_key   text NOT NULL,
    evidence    jsonb NOT NULL
) ON COMMIT DELETE ROWS

-- name: groups_eligible
-- Unwithdrawn analytics consents valid at the run time, of active subjects.
-- A consent limited to a provider or to types limits the readings used.
INSERT INTO group_eligible (subject_id, provider_id, types)
SELECT c.subject_id, c.provider_id, c.types
FROM consents c
JOIN subjects s ON s.subject_id = c.subject_id AND s.status = 'active'
WHERE c.purpose = 'analytics'
  AND c.valid_from <= %(as_of)s AND %(as_of)s < c.valid_until
  AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w WHERE w.consent_id = c.consent_id)

-- name: groups_metrics
-- Windowed aggregates per eligible subject over whole UTC days before the
-- run's day: the window [w_start, w_end) for every metric, and for lapse
-- detection the recent [l_start, w_end) and the prior [p_start, l_start).
-- Values are rounded once here, so the evidence is exactly what decided.
INSERT INTO group_metrics (subject_id, metrics)
WITH bounds AS (
    SELECT %(window_end)s::timestamptz AS w_end,
           %(window_end)s::timestamptz - make_interval(days => %(window_days)s) AS w_start,
           %(window_end)s::timestamptz - make_interval(days => %(lapse_days)s) AS l_start,
           %(window_end)s::timestamptz
               - make_interval(days => %(lapse_days)s + %(window_days)s) AS p_start
),
raw AS (
    SELECT r.subject_id,
           count(*) FILTER (WHERE r.component = 'systolic_blood_pressure') AS bp_n,
           avg(r.value) FILTER (WHERE r.component = 'systolic_blood_pressure') AS systolic_mean,
           avg(r.value) FILTER (WHERE r.component = 'diastolic_blood_pressure') AS diastolic_mean,
           count(*) FILTER (WHERE r.component = 'heart_rate') AS hr_n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.value)
               FILTER (WHERE r.component = 'heart_rate') AS hr_median,
           count(*) FILTER (WHERE r.component = 'oxygen_saturation') AS spo2_n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.value)
               FILTER (WHERE r.component = 'oxygen_saturation') AS spo2_median,
           count(*) FILTER (WHERE r.component = 'blood_glucose') AS glucose_n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.value)
               FILTER (WHERE r.component = 'blood_glucose') AS glucose_median,
           count(*) FILTER (WHERE r.component = 'body_weight') AS weight_n,
           regr_slope(r.value, extract(epoch FROM r.effective_time)::double precision / 86400)
               FILTER (WHERE r.component = 'body_weight') * %(window_days)s AS weight_trend_kg
    FROM readings r, bounds b
    WHERE r.effective_time >= b.w_start AND r.effective_time < b.w_end
      AND r.type IN ('blood-pressure', 'heart-rate', 'oxygen-saturation',
                     'blood-glucose', 'body-weight')
      AND NOT r.erroneous
      AND EXISTS (SELECT 1 FROM group_eligible e
                  WHERE e.subject_id = r.subject_id
                    AND (e.provider_id IS NULL OR e.provider_id = r.provider_id)
                    AND (e.types IS NULL OR r.type = ANY (e.types)))
    GROUP BY r.subject_id
),
daily AS (
    SELECT d.subject_id, d.day,
           sum(d.n) AS n,
           sum(d.total) FILTER (WHERE d.component = 'step_count') AS steps
    FROM readings_daily d, bounds b
    WHERE d.day >= b.p_start AND d.day < b.w_end
      AND EXISTS (SELECT 1 FROM group_eligible e
                  WHERE e.subject_id = d.subject_id
                    AND (e.provider_id IS NULL OR e.provider_id = d.provider_id)
                    AND (e.types IS NULL OR d.type = ANY (e.types)))
    GROUP BY d.subject_id, d.day
),
days AS (
    SELECT dl.subject_id,
           sum(dl.n) FILTER (WHERE dl.day >= b.w_start) AS readings_n,
           count(*) FILTER (WHERE dl.day >= b.w_start) AS active_days,
           count(*) FILTER (WHERE dl.day >= b.l_start) AS recent_active_days,
           sum(dl.n) FILTER (WHERE dl.day < b.l_start) AS prior_readings_n,
           count(*) FILTER (WHERE dl.day < b.l_start) AS prior_active_days,
           count(dl.steps) FILTER (WHERE dl.day >= b.w_start) AS step_days,
           avg(dl.steps) FILTER (WHERE dl.day >= b.w_start) AS steps_per_day
    FROM daily dl, bounds b
    GROUP BY dl.subject_id
)
SELECT s.subject_id, jsonb_strip_nulls(jsonb_build_object(
    'bp_n', coalesce(raw.bp_n, 0),
    'systolic_mean', round(raw.systolic_mean::numeric, 2),
    'diastolic_mean', round(raw.diastolic_mean::numeric, 2),
    'hr_n', coalesce(raw.hr_n, 0),
    'hr_median', round(raw.hr_median::numeric, 2),
    'spo2_n', coalesce(raw.spo2_n, 0),
    'spo2_median', round(raw.spo2_median::numeric, 2),
    'glucose_n', coalesce(raw.glucose_n, 0),
    'glucose_median', round(raw.glucose_median::numeric, 2),
    'weight_n', coalesce(raw.weight_n, 0),
    'weight_trend_kg', round(raw.weight_trend_kg::numeric, 2),
    'step_days', coalesce(days.step_days, 0),
    'steps_per_day', round(days.steps_per_day::numeric, 1),
    'readings_n', coalesce(days.readings_n, 0),
    'active_days', coalesce(days.active_days, 0),
    'active_day_ratio', round(coalesce(days.active_days, 0)::numeric / %(window_days)s, 4),
    'recent_active_days', coalesce(days.recent_active_days, 0),
    'prior_readings_n', coalesce(days.prior_readings_n, 0),
    'prior_active_day_ratio',
        round(coalesce(days.prior_active_days, 0)::numeric / %(window_days)s, 4)
))
FROM (SELECT DISTINCT subject_id FROM group_eligible) s
LEFT JOIN raw ON raw.subject_id = s.subject_id
LEFT JOIN days ON days.subject_id = s.subject_id

-- name: groups_matches
-- Every rule (a jsonb array parameter) against every subject's metrics; within
-- a family (e.g. blood_pressure) the matching rule of lowest priority wins.
INSERT INTO group_matches (subject_id, group_key, evidence)
SELECT subject_id, group_key, evidence
FROM (
    SELECT m.subject_id,
           rule ->> 'group' AS group_key,
           coalesce((SELECT jsonb_object_agg(k, m.metrics -> k)
                     FROM jsonb_array_elements_text(rule -> 'evidence') AS k
                     WHERE m.metrics ? k), '{}'::jsonb)
               || %(window)s::jsonb
               || jsonb_build_object('min_readings', rule -> 'min_readings') AS evidence,
           row_number() OVER (
               PARTITION BY m.subject_id, coalesce(rule ->> 'family', rule ->> 'group')
               ORDER BY coalesce((rule ->> 'priority')::int, 0)
           ) AS rank
    FROM group_metrics m
    CROSS JOIN jsonb_array_elements(%(rules)s::jsonb) AS rule
    WHERE coalesce((m.metrics ->> (rule ->> 'count'))::double precision, 0)
              >= (rule ->> 'min_readings')::int
      AND vitals_rule_holds(rule -> 'when', m.metrics)
) ranked
WHERE rank = 1

-- name: groups_end_ineligible
-- Subjects without a valid, unwithdrawn analytics consent: every open
-- membership ends now.
UPDATE group_memberships g
SET valid_until = greatest(%(as_of)s, g.valid_from),
    end_reason = CASE
        WHEN EXISTS (SELECT 1 FROM consents c
                     JOIN consent_withdrawals w ON w.consent_id = c.consent_id
                     WHERE c.subject_id = g.subject_id AND c.purpose = 'analytics')
        THEN 'analytics_consent_withdrawn'
        ELSE 'no_analytics_consent'
    END
WHERE g.valid_until IS NULL
  AND NOT EXISTS (SELECT 1 FROM group_eligible e WHERE e.subject_id = g.subject_id)
RETURNING g.end_reason

-- name: groups_end_unmatched
UPDATE group_memberships g
SET valid_until = greatest(%(as_of)s, g.valid_from),
    end_reason = CASE WHEN g.rule_version <> %(version)s THEN 'rule_version_changed'
                      ELSE 'criteria_not_met' END
WHERE g.valid_until IS NULL
  AND (g.rule_version <> %(version)s
       OR NOT EXISTS (SELECT 1 FROM group_matches m
                      WHERE m.subject_id = g.subject_id AND m.group_key = g.group_key))
RETURNING g.end_reason

-- name: groups_start
INSERT INTO group_memberships (subject_id, group_key, rule_version, evidence, valid_from)
SELECT m.subject_id, m.group_key, %(version)s, m.evidence, %(as_of)s
FROM group_matches m
WHERE NOT EXISTS (SELECT 1 FROM group_memberships g
                  WHERE g.valid_until IS NULL
                    AND g.subject_id = m.subject_id AND g.group_key = m.group_key)

-- name: groups_summary
SELECT (SELECT count(DISTINCT subject_id) FROM group_eligible) AS subjects,
       (SELECT count(*) FROM group_memberships WHERE valid_until IS NULL) AS open
