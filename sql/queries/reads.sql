-- Named queries of the admin API's audited reads (store/reads.py) and token revocation.

-- name: list_tokens
SELECT encode(token_hash, 'hex') AS token_id, name, role, created_at, expires_at, revoked_at
FROM api_tokens ORDER BY created_at, name

-- name: revoke_token
UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
WHERE token_hash = decode(%(token_id)s, 'hex')
RETURNING encode(token_hash, 'hex') AS token_id, name, role, revoked_at

-- name: search_audit
-- Newest first; every filter is optional; `before` pages by audit_id.
SELECT audit_id, at, actor, action, subject_ref, detail
FROM audit_log
WHERE (%(actor)s::text IS NULL OR actor = %(actor)s)
  AND (%(action)s::text IS NULL OR action = %(action)s)
  AND (%(subject_ref)s::text IS NULL OR subject_ref = %(subject_ref)s)
  AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR at < %(until)s)
  AND (%(before)s::bigint IS NULL OR audit_id < %(before)s)
ORDER BY audit_id DESC
LIMIT %(limit)s

-- name: list_exports
SELECT export_id, region, cutoff, path, subject_count, row_count, created_by, created_at,
       purged_at
FROM exports ORDER BY created_at DESC, export_id

-- name: get_export
SELECT export_id, region, cutoff, path, subject_count, row_count, created_by, created_at,
       purged_at
FROM exports WHERE export_id = %(export_id)s
