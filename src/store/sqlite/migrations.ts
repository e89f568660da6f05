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
];
