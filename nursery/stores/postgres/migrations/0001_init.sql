-- Users, device sessions, todos with a per-user revision counter, tombstones, idempotency.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    -- rev: the user's newest revision; horizon: newest revision whose tombstone was purged.
    rev           bigint NOT NULL DEFAULT 0,
    horizon       bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE todos (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      text NOT NULL,
    notes      text NOT NULL DEFAULT '',
    done       boolean NOT NULL DEFAULT false,
    due        timestamptz,
    tags       text[] NOT NULL DEFAULT '{}',
    rev        bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
-- The change feed reads by (user, rev); revisions are unique per user.
CREATE UNIQUE INDEX todos_user_rev ON todos (user_id, rev);
-- Listing pages by (created_at, id) over live todos.
CREATE INDEX todos_user_created ON todos (user_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX todos_tombstones ON todos (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE idempotency_keys (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         text NOT NULL,
    fingerprint text NOT NULL,
    -- the first write's change (Change.to_json()), returned again to a retry
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
