-- The audit log: who did what, when, from which device (session), on which instance.
-- No foreign key to users: a log records what happened, even about rows that may go later,
-- and a batch insert must not fail because of one entry.

CREATE TABLE audit_log (
    id         uuid PRIMARY KEY,          -- chosen by the writer: a retried batch is skipped
    user_id    uuid NOT NULL,
    kind       text NOT NULL,             -- login, logout, revoke, todo.create|update|delete
    at         timestamptz NOT NULL,      -- whole milliseconds, as on MongoDB
    seq        bigint NOT NULL,           -- the recording instance's order within one instant
    session_id uuid,                      -- the device that acted
    device     text NOT NULL DEFAULT '',
    instance   text NOT NULL DEFAULT '',
    todo_id    uuid,
    done       boolean,                   -- the value a todo write set for done, if it set it
    details    jsonb NOT NULL DEFAULT '{}'
);
-- /api/activity (newest first) and the analytics' range scan per user.
CREATE INDEX audit_log_user_at ON audit_log (user_id, at DESC, seq DESC, id DESC);
