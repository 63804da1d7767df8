-- Audit retention: the pruner deletes the oldest entries first, across every user, in batches
-- (NURSERY_AUDIT_RETENTION_DAYS); this index keeps each batch a range scan.
CREATE INDEX audit_log_at ON audit_log (at);
