-- name: insert_provider
INSERT INTO providers (provider_id, name, types, webhook_secret_enc, mqtt_username)
VALUES (%(provider_id)s, %(name)s, %(types)s, %(secret)s, %(mqtt_username)s)

-- name: get_provider
SELECT provider_id, name, types, webhook_secret_enc, mqtt_username, status, created_at
FROM providers WHERE provider_id = %(provider_id)s

-- name: list_providers
SELECT provider_id, name, types, mqtt_username, status, created_at
FROM providers ORDER BY created_at

-- name: set_provider_status
UPDATE providers SET status = %(status)s WHERE provider_id = %(provider_id)s
RETURNING provider_id, status

-- name: set_provider_mqtt
UPDATE providers SET mqtt_username = %(mqtt_username)s WHERE provider_id = %(provider_id)s

-- name: insert_subject
INSERT INTO subjects (subject_id, residency) VALUES (%(subject_id)s, %(residency)s)

-- name: get_subject
SELECT subject_id, residency, status, relationship_end, created_at
FROM subjects WHERE subject_id = %(subject_id)s

-- name: lock_subject
SELECT subject_id, residency, status, relationship_end
FROM subjects WHERE subject_id = %(subject_id)s FOR UPDATE

-- name: share_lock_subject
-- Audit rows naming a subject: conflicts with erasure's final DELETE.
SELECT subject_id FROM subjects WHERE subject_id = %(subject_id)s FOR KEY SHARE

-- name: insert_link
INSERT INTO links (provider_id, user_ref, subject_id)
VALUES (%(provider_id)s, %(user_ref)s, %(subject_id)s)

-- name: subject_links
SELECT provider_id, user_ref, created_at FROM links
WHERE subject_id = %(subject_id)s ORDER BY created_at, provider_id

-- name: insert_consent
INSERT INTO consents (consent_id, subject_id, purpose, provider_id, types,
                      valid_from, valid_until, granted_by)
VALUES (%(consent_id)s, %(subject_id)s, %(purpose)s, %(provider_id)s, %(types)s,
        coalesce(%(valid_from)s, '-infinity'::timestamptz),
        coalesce(%(valid_until)s, 'infinity'::timestamptz), %(actor)s)

-- name: consent_subject
SELECT c.subject_id, w.withdrawn_at, c.purpose
FROM consents c LEFT JOIN consent_withdrawals w USING (consent_id)
WHERE c.consent_id = %(consent_id)s

-- name: insert_withdrawal
INSERT INTO consent_withdrawals (consent_id, withdrawn_by)
VALUES (%(consent_id)s, %(actor)s)
RETURNING withdrawn_at

-- name: remove_uncovered_location
-- After a location withdrawal, in its transaction (subject locked): the subject's
-- coordinates no unwithdrawn location consent covers any more (the gate's rule:
-- provider or any, effective time in [from, until)). Geoposition readings are
-- deleted (every component), coordinates inside other readings nulled.
-- Returns (geoposition readings deleted, readings whose coordinates were cleared).
WITH still_covered AS (
    SELECT c.provider_id, c.valid_from, c.valid_until
    FROM consents c
    WHERE c.subject_id = %(subject_id)s AND c.purpose = 'location'
      AND NOT EXISTS (SELECT 1 FROM consent_withdrawals w WHERE w.consent_id = c.consent_id)
), geo AS (
    DELETE FROM readings r
    WHERE r.subject_id = %(subject_id)s AND r.type = 'geoposition'
      AND NOT EXISTS (
          SELECT 1 FROM still_covered c
          WHERE (c.provider_id IS NULL OR c.provider_id = r.provider_id)
            AND r.effective_time >= c.valid_from AND r.effective_time < c.valid_until)
    RETURNING r.provider_id, r.reading_id, r.effective_time
), coords AS (
    UPDATE readings r SET latitude = NULL, longitude = NULL
    WHERE r.subject_id = %(subject_id)s AND r.type <> 'geoposition'
      AND (r.latitude IS NOT NULL OR r.longitude IS NOT NULL)
      AND NOT EXISTS (
          SELECT 1 FROM still_covered c
          WHERE (c.provider_id IS NULL OR c.provider_id = r.provider_id)
            AND r.effective_time >= c.valid_from AND r.effective_time < c.valid_until)
    RETURNING r.provider_id, r.reading_id, r.effective_time
)
SELECT (SELECT count(*) FROM (SELECT DISTINCT * FROM geo) g),
       (SELECT count(*) FROM (SELECT DISTINCT * FROM coords) c)

-- name: consent_history
-- Open bounds are stored as -infinity/infinity and shown as null.
SELECT c.consent_id, c.purpose, c.provider_id, c.types,
       CASE WHEN isfinite(c.valid_from) THEN c.valid_from END AS valid_from,
       CASE WHEN isfinite(c.valid_until) THEN c.valid_until END AS valid_until,
       c.granted_at, c.granted_by, w.withdrawn_at, w.withdrawn_by
FROM consents c LEFT JOIN consent_withdrawals w USING (consent_id)
WHERE c.subject_id = %(subject_id)s
ORDER BY c.granted_at, c.consent_id

-- name: insert_audit
INSERT INTO audit_log (actor, action, subject_ref, detail)
VALUES (%(actor)s, %(action)s, %(subject_ref)s, %(detail)s)

-- name: insert_token
INSERT INTO api_tokens (token_hash, name, role, expires_at)
VALUES (%(token_hash)s, %(name)s, %(role)s, now() + make_interval(days => %(days)s))
RETURNING expires_at

-- name: token_role
SELECT name, role FROM api_tokens
WHERE token_hash = %(token_hash)s AND revoked_at IS NULL AND expires_at > now()
