-- The PostgreSQL schema of the store: the same tables as the SQLite backend (schema v5
-- there), with PostgreSQL types. Times are milliseconds since the Unix epoch.

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    "user"        TEXT,
    channel       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    message_count BIGINT NOT NULL DEFAULT 0,
    title         TEXT
);
CREATE INDEX sessions_updated ON sessions (updated_at DESC);

CREATE TABLE messages (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id        TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role              TEXT NOT NULL,
    content           TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    model             TEXT,
    prompt_tokens     BIGINT,
    completion_tokens BIGINT,
    -- The turn that wrote the message: a turn delivered twice is stored once.
    turn_id           TEXT
);
CREATE INDEX messages_session ON messages (session_id, id);
CREATE UNIQUE INDEX messages_turn ON messages (turn_id, role) WHERE turn_id IS NOT NULL;

CREATE TABLE channel_cursors (
    channel TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (channel, key)
);

CREATE TABLE inbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel       TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    chat_id       TEXT NOT NULL,
    sender_id     TEXT NOT NULL,
    sender_name   TEXT,
    text          TEXT NOT NULL,
    is_group      BOOLEAN NOT NULL,
    mentioned     BOOLEAN NOT NULL,
    reply_to      TEXT,
    thread        TEXT,
    received_at   BIGINT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending',
    claimed_by    TEXT,
    claimed_until BIGINT,
    UNIQUE (channel, external_id)
);
CREATE INDEX inbox_pending ON inbox (status, id);
CREATE INDEX inbox_received ON inbox (received_at);

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel         TEXT NOT NULL,
    chat_id         TEXT NOT NULL,
    text            TEXT NOT NULL,
    reply_to        TEXT,
    thread          TEXT,
    dedupe_key      TEXT UNIQUE,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    platform_id     TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX outbox_chat ON outbox (status, channel, chat_id, id);
CREATE INDEX outbox_created ON outbox (created_at);

CREATE TABLE pairing_requests (
    channel      TEXT NOT NULL,
    sender_id    TEXT NOT NULL,
    sender_name  TEXT,
    chat_id      TEXT NOT NULL,
    code         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_sent_at BIGINT NOT NULL,
    PRIMARY KEY (channel, sender_id)
);

CREATE TABLE allowed_senders (
    channel     TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    sender_name TEXT,
    approved_at BIGINT NOT NULL,
    via         TEXT NOT NULL,
    PRIMARY KEY (channel, sender_id)
);

CREATE TABLE cron_jobs (
    id             TEXT PRIMARY KEY,
    -- Insertion order, for listing (SQLite's rowid).
    seq            BIGINT GENERATED ALWAYS AS IDENTITY,
    name           TEXT NOT NULL,
    schedule_kind  TEXT NOT NULL,
    schedule_expr  TEXT NOT NULL,
    tz             TEXT NOT NULL,
    payload_kind   TEXT NOT NULL,
    payload_text   TEXT NOT NULL,
    payload_args   TEXT,
    target_channel TEXT,
    target_chat_id TEXT,
    target_session TEXT,
    enabled        BOOLEAN NOT NULL DEFAULT TRUE,
    run_now        BOOLEAN NOT NULL DEFAULT FALSE,
    next_run_ms    BIGINT,
    last_run_ms    BIGINT,
    last_status    TEXT,
    misfire        TEXT,
    owner          TEXT,
    created_ms     BIGINT NOT NULL,
    claimed_until  BIGINT,
    CHECK ((target_session IS NULL) <> (target_channel IS NULL AND target_chat_id IS NULL))
);
CREATE INDEX cron_jobs_due ON cron_jobs (enabled, next_run_ms);

CREATE TABLE cron_runs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       TEXT NOT NULL REFERENCES cron_jobs (id) ON DELETE CASCADE,
    scheduled_ms BIGINT NOT NULL,
    started_ms   BIGINT NOT NULL,
    finished_ms  BIGINT NOT NULL,
    status       TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    output       TEXT
);
CREATE INDEX cron_runs_job ON cron_runs (job_id, id);
