/**
 * SQLite migrations, numbered. Times are stored as integer milliseconds since the
 * epoch (UTC). Never edit an applied migration: add the next number.
 */
export const SQLITE_MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
CREATE TABLE channels (
  id         INTEGER PRIMARY KEY,
  name       TEXT NOT NULL UNIQUE,
  platform   TEXT NOT NULL,
  settings   TEXT NOT NULL DEFAULT '{}',
  enabled    INTEGER NOT NULL DEFAULT 1,
  created_at INTEGER NOT NULL
);

CREATE TABLE post_details (
  id         INTEGER PRIMARY KEY,
  text       TEXT NOT NULL,
  created_at INTEGER NOT NULL
);

CREATE TABLE post_schedule (
  id               INTEGER PRIMARY KEY,
  post_detail_id   INTEGER NOT NULL REFERENCES post_details(id),
  channel_id       INTEGER NOT NULL REFERENCES channels(id),
  run_at           INTEGER NOT NULL,
  status           TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'processing', 'published', 'failed', 'cancelled')),
  worker_id        TEXT,
  locked_at        INTEGER,
  lease_expires_at INTEGER,
  attempts         INTEGER NOT NULL DEFAULT 0,
  last_error       TEXT,
  published_at     INTEGER,
  external_id      TEXT,
  external_url     TEXT,
  idempotency_key  TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
);

-- The due query (status = 'pending' AND run_at <= now, ordered by run_at) reads only
-- this partial index, so posts scheduled for later or already done cost nothing.
CREATE INDEX post_schedule_due ON post_schedule (run_at, id) WHERE status = 'pending';
-- Recovery of expired leases reads only posts holding a lease (processing ones).
CREATE INDEX post_schedule_lease ON post_schedule (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

CREATE TABLE cycles (
  id                INTEGER PRIMARY KEY,
  host              TEXT NOT NULL,
  started_at        INTEGER NOT NULL,
  finished_at       INTEGER,
  pending           INTEGER,
  recovered         INTEGER,
  workers_spawned   INTEGER,
  workers_succeeded INTEGER,
  workers_failed    INTEGER,
  exit_code         INTEGER,
  duration_ms       INTEGER
);

CREATE TABLE worker_runs (
  worker_id   TEXT NOT NULL,
  cycle_id    INTEGER NOT NULL REFERENCES cycles(id),
  started_at  INTEGER NOT NULL,
  finished_at INTEGER NOT NULL,
  exit_code   INTEGER,
  signal      TEXT,
  published   INTEGER NOT NULL DEFAULT 0,
  retried     INTEGER NOT NULL DEFAULT 0,
  failed      INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (cycle_id, worker_id)
);
`,
  },
  {
    version: 2,
    name: 'cycle locks',
    sql: `
-- One row per host while a cycle runs there: which store of which process holds it, until when.
CREATE TABLE cycle_locks (
  host       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  pid        INTEGER NOT NULL,
  locked_at  INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
`,
  },
  {
    version: 3,
    name: 'unknown outcomes',
    sql: `
-- The post_schedule status CHECK gains 'unknown'. SQLite cannot alter a CHECK, so the
-- table is rebuilt (nothing references it) and its indexes made again.
CREATE TABLE post_schedule_v3 (
  id               INTEGER PRIMARY KEY,
  post_detail_id   INTEGER NOT NULL REFERENCES post_details(id),
  channel_id       INTEGER NOT NULL REFERENCES channels(id),
  run_at           INTEGER NOT NULL,
  status           TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'processing', 'published', 'failed', 'cancelled', 'unknown')),
  worker_id        TEXT,
  locked_at        INTEGER,
  lease_expires_at INTEGER,
  attempts         INTEGER NOT NULL DEFAULT 0,
  last_error       TEXT,
  published_at     INTEGER,
  external_id      TEXT,
  external_url     TEXT,
  idempotency_key  TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  -- an earlier attempt may have been delivered (its outcome is unknown)
  unconfirmed      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO post_schedule_v3 (id, post_detail_id, channel_id, run_at, status, worker_id, locked_at, lease_expires_at,
                              attempts, last_error, published_at, external_id, external_url, idempotency_key,
                              created_at, updated_at)
SELECT id, post_detail_id, channel_id, run_at, status, worker_id, locked_at, lease_expires_at,
       attempts, last_error, published_at, external_id, external_url, idempotency_key, created_at, updated_at
  FROM post_schedule;
DROP TABLE post_schedule;
ALTER TABLE post_schedule_v3 RENAME TO post_schedule;
CREATE INDEX post_schedule_due ON post_schedule (run_at, id) WHERE status = 'pending';
CREATE INDEX post_schedule_lease ON post_schedule (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
-- Posts waiting for an operator, listed by status.
CREATE INDEX post_schedule_unknown ON post_schedule (updated_at) WHERE status = 'unknown';

-- What happens to a channel's post whose outcome is unknown. Existing file channels can
-- look up what they wrote; every other channel holds such posts for an operator.
ALTER TABLE channels ADD COLUMN on_unknown TEXT NOT NULL DEFAULT 'hold'
  CHECK (on_unknown IN ('retry', 'check', 'hold'));
UPDATE channels SET on_unknown = 'check' WHERE platform = 'file';
`,
  },
  {
    version: 4,
    name: 'worker slots',
    sql: `
-- The global worker cap (GLOBAL_MAX_WORKERS): one row per worker slot in use, naming the
-- dispatcher (store connection and pid) that holds it and until when.
CREATE TABLE worker_slots (
  slot       INTEGER PRIMARY KEY,
  holder     TEXT NOT NULL,
  host       TEXT NOT NULL,
  pid        INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
`,
  },
  {
    version: 5,
    name: 'claim tokens and coordination rows',
    sql: `
-- Goes up by one with every claim and never down: every worker update is fenced by it.
ALTER TABLE post_schedule ADD COLUMN claim_token INTEGER NOT NULL DEFAULT 0;
-- The time a post was scheduled for: run_at moves with retries, this does not (NULL for
-- posts scheduled before it existed: their run_at stands in).
ALTER TABLE post_schedule ADD COLUMN scheduled_at INTEGER;
-- Attempts made before the latest operator retry: MAX_ATTEMPTS counts from here.
ALTER TABLE post_schedule ADD COLUMN attempts_base INTEGER NOT NULL DEFAULT 0;
CREATE INDEX post_schedule_worker ON post_schedule (worker_id) WHERE status = 'processing';
CREATE INDEX post_schedule_done ON post_schedule (updated_at) WHERE status IN ('published', 'failed', 'cancelled');
-- The latest failures, for status, however many posts were published.
CREATE INDEX post_schedule_failed ON post_schedule (updated_at, id) WHERE status = 'failed';
-- Worker slots are held by the worker's id, renewed by the worker and its dispatcher.
DELETE FROM worker_slots;
CREATE UNIQUE INDEX worker_slots_holder ON worker_slots (holder);
-- Cycle locks and worker slots name the machine of their holder too (as on PostgreSQL).
ALTER TABLE cycle_locks ADD COLUMN machine TEXT NOT NULL DEFAULT '';
ALTER TABLE worker_slots ADD COLUMN machine TEXT NOT NULL DEFAULT '';
`,
  },
  {
    version: 6,
    name: 'sealed credentials',
    sql: `
-- A channel's credentials (tokens, passwords, a webhook's URL and secret), sealed with
-- AES-256-GCM under POST_SCHEDULER_SECRET_KEY (or stored plain when the operator says
-- so): never in \`settings\`, which may be shown.
ALTER TABLE channels ADD COLUMN credentials TEXT;
-- Why the channel needs an operator (its credentials were refused by the network, or
-- cannot be opened with the key): its posts wait, without using up their attempts,
-- until a publish succeeds again or the channel gets new credentials.
ALTER TABLE channels ADD COLUMN attention TEXT;
`,
  },
  {
    version: 7,
    name: 'rate windows and channel pauses',
    sql: `
-- Rate limits (src/ratelimits): one row per sliding window (channel:<id>:posts,
-- channel:<id>:requests) with the times (epoch ms, ascending, a JSON array) of the
-- latest sends it counted, at most its limit of them.
CREATE TABLE rate_windows (
  key    TEXT PRIMARY KEY,
  stamps TEXT NOT NULL DEFAULT '[]'
);
-- Sends in flight of a channel with a concurrency cap: one row per slot held, by one
-- send, until it ends or expires_at (a worker that died mid-send).
CREATE TABLE send_slots (
  key        TEXT NOT NULL,
  slot       INTEGER NOT NULL,
  holder     TEXT NOT NULL UNIQUE,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (key, slot)
);
-- A channel the network told to wait (a 429, Retry-After): no send before paused_until.
ALTER TABLE channels ADD COLUMN paused_until INTEGER;
ALTER TABLE channels ADD COLUMN pause_reason TEXT;
`,
  },
  {
    version: 8,
    name: 'post content parts',
    sql: `
-- The whole content when it is more than one text: images, or a thread (a JSON array of
-- {text, images: [{source, alt}]}); NULL for a post of one part without images, whose
-- content is \`text\` (which always holds the first part's text).
ALTER TABLE post_details ADD COLUMN parts TEXT;
-- The parts of a thread already published, in order (a JSON array of {externalId,
-- externalUrl, replyRef?}): a retry resumes after them and never sends one again.
ALTER TABLE post_schedule ADD COLUMN published_parts TEXT NOT NULL DEFAULT '[]';
`,
  },
  {
    version: 9,
    name: 'managing posts and channels',
    sql: `
-- An operator's pause (channels pause/resume): while set, the channel's posts wait,
-- pending, and are not claimed (a network's 429 uses paused_until, which ends by itself).
ALTER TABLE channels ADD COLUMN paused_at INTEGER;
-- A removed channel (channels remove) stays as a row, so that the posts it published can
-- still be shown; its name is freed (see removeChannel).
ALTER TABLE channels ADD COLUMN removed_at INTEGER;
-- The caller's key of \`schedule --key\`: one post per key, whatever the channel.
ALTER TABLE post_schedule ADD COLUMN schedule_key TEXT;
CREATE UNIQUE INDEX post_schedule_key ON post_schedule (schedule_key) WHERE schedule_key IS NOT NULL;
-- posts list: by time (next first) over all posts or one channel's.
CREATE INDEX post_schedule_run_at ON post_schedule (run_at, id);
CREATE INDEX post_schedule_channel ON post_schedule (channel_id, run_at, id);
-- One row per attempt that ended (posts show): written with its outcome.
CREATE TABLE post_attempts (
  post_id      INTEGER NOT NULL,
  attempt      INTEGER NOT NULL,
  worker_id    TEXT,
  started_at   INTEGER,
  finished_at  INTEGER NOT NULL,
  outcome      TEXT NOT NULL,
  error        TEXT,
  external_id  TEXT,
  external_url TEXT
);
CREATE INDEX post_attempts_post ON post_attempts (post_id, attempt);
`,
  },
  {
    // 9 is another change's (assigned numbers); the runner applies whatever is missing
    version: 10,
    name: 'alerts',
    sql: `
-- One row per outcome reported to ALERT_CHANNEL (src/alerts): a post that ended failed
-- or unknown under one claim (post_id, claim_token) is reported once, however many
-- dispatchers look. Goes with its post (prune).
CREATE TABLE alerts (
  post_id     INTEGER NOT NULL REFERENCES post_schedule(id) ON DELETE CASCADE,
  claim_token INTEGER NOT NULL,
  outcome     TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (post_id, claim_token)
);
`,
  },
  {
    version: 11,
    name: 'cycles by start',
    sql: `
-- serve's activity and \`tune\` read the cycles of a window by started_at (and prune deletes by it).
CREATE INDEX cycles_started ON cycles (started_at);
`,
  },
  {
    version: 12,
    name: 'attempt reasons',
    sql: `
-- Why an attempt did not publish (src/reasons.ts: rate-limited, timeout, auth, ...);
-- NULL for a published attempt and for the attempts recorded before this migration.
ALTER TABLE post_attempts ADD COLUMN reason TEXT;
-- \`tune\` and /metrics read the attempts of a window by their end (a bounded range
-- read); one more index entry per attempt, on a table written once per attempt.
CREATE INDEX post_attempts_finished ON post_attempts (finished_at);
`,
  },
  {
    // the numbers between are other changes' (assigned numbers); the runner applies whatever is missing
    version: 15,
    name: 'published posts by channel',
    sql: `
-- Deadline-aware sizing (Store.dueByChannel): a channel's most recently published posts,
-- whose attempts give its publish latency. Partial: only a post's move to published
-- writes an entry; claims and retries never touch it.
CREATE INDEX post_schedule_published ON post_schedule (channel_id, updated_at) WHERE status = 'published';
`,
  },
];
