/**
 * MySQL/MariaDB migrations, numbered, each a list of statements. DDL is not
 * transactional here (each statement commits), so every statement of a migration is one
 * that can run again after a crash half-way (IF NOT EXISTS), and the migration is
 * recorded after its last one. Applied under a named lock (GET_LOCK), so that many
 * processes starting at once migrate exactly once. Never edit an applied migration.
 *
 * Differences from the PostgreSQL schema, each for a reason:
 * - times are DATETIME(3) in UTC (the session's time_zone is +00:00), on the server's
 *   clock (NOW(3)); PostgreSQL's timestamptz keeps microseconds, these milliseconds;
 * - no partial indexes: the due, done, failed and published indexes lead with `status`
 *   instead, so each still reads only the posts of its state;
 * - every table is utf8mb4 with the binary collation: emoji and every script round-trip,
 *   and names compare byte for byte, as on PostgreSQL;
 * - rate windows keep their stamps as a JSON array (SQLite's way), and the slot is taken
 *   in a transaction of the store's (rate.ts), not a stored function;
 * - no due-notification triggers (MySQL has no LISTEN/NOTIFY): watchDue polls.
 */
export const MYSQL_MIGRATIONS: readonly { version: number; name: string; statements: readonly string[] }[] = [
  {
    version: 1,
    name: 'initial',
    statements: [
      `CREATE TABLE IF NOT EXISTS channels (
  id           BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name         VARCHAR(255) NOT NULL,
  platform     VARCHAR(64) NOT NULL,
  settings     JSON NOT NULL,
  enabled      BOOLEAN NOT NULL DEFAULT TRUE,
  created_at   DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  -- what happens to a post whose outcome is unknown (see the PostgreSQL migration 3)
  on_unknown   VARCHAR(8) NOT NULL DEFAULT 'hold' CHECK (on_unknown IN ('retry', 'check', 'hold')),
  -- sealed credentials, and why the channel needs an operator
  credentials  TEXT,
  attention    TEXT,
  -- a network's 429 (ends by itself) and an operator's pause
  paused_until DATETIME(3),
  pause_reason TEXT,
  paused_at    DATETIME(3),
  -- when an operator last resumed it: watchDue's fingerprint sees a pause and resume
  -- that fall between two of its reads (PostgreSQL's trigger notifies instead)
  resumed_at   DATETIME(3),
  removed_at   DATETIME(3),
  UNIQUE KEY channels_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      `CREATE TABLE IF NOT EXISTS post_details (
  id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  text       MEDIUMTEXT NOT NULL,
  -- the whole content when it is more than one text (see the PostgreSQL migration 7)
  parts      JSON,
  created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      `CREATE TABLE IF NOT EXISTS post_schedule (
  id               BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  post_detail_id   BIGINT NOT NULL,
  channel_id       BIGINT NOT NULL,
  run_at           DATETIME(3) NOT NULL,
  status           VARCHAR(16) NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'processing', 'published', 'failed', 'cancelled', 'unknown')),
  worker_id        VARCHAR(255),
  locked_at        DATETIME(3),
  lease_expires_at DATETIME(3),
  attempts         INT NOT NULL DEFAULT 0,
  last_error       TEXT,
  published_at     DATETIME(3),
  external_id      TEXT,
  external_url     TEXT,
  idempotency_key  VARCHAR(255) NOT NULL,
  created_at       DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  updated_at       DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  -- an earlier attempt may have been delivered (its outcome is unknown)
  unconfirmed      BOOLEAN NOT NULL DEFAULT FALSE,
  -- goes up by one with every claim and never down: every worker update is fenced by it
  claim_token      BIGINT NOT NULL DEFAULT 0,
  -- the time the post was scheduled for (run_at moves with retries, this does not)
  scheduled_at     DATETIME(3),
  -- attempts made before the latest operator retry
  attempts_base    INT NOT NULL DEFAULT 0,
  -- the parts of a thread already published, in order
  published_parts  JSON NOT NULL,
  -- the caller's key of \`schedule --key\` (NULLs do not collide in a unique index)
  schedule_key     VARCHAR(255),
  CONSTRAINT post_schedule_detail FOREIGN KEY (post_detail_id) REFERENCES post_details (id),
  CONSTRAINT post_schedule_channel FOREIGN KEY (channel_id) REFERENCES channels (id),
  UNIQUE KEY post_schedule_key (schedule_key),
  -- the due query (status = 'pending' AND run_at <= now, by run_at) and every list of one
  -- state by time: a range of this index, as PostgreSQL's partial index is
  KEY post_schedule_due (status, run_at, id),
  -- finished, failed and unknown posts by age (status, prune)
  KEY post_schedule_done (status, updated_at, id),
  -- recovery of expired leases
  KEY post_schedule_lease (lease_expires_at),
  -- what a worker holds, read after a lost round trip
  KEY post_schedule_worker (worker_id, status),
  -- deadline-aware sizing: a channel's most recently published posts
  KEY post_schedule_published (channel_id, status, updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      `CREATE TABLE IF NOT EXISTS cycles (
  id                BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  host              VARCHAR(255) NOT NULL,
  started_at        DATETIME(3) NOT NULL,
  finished_at       DATETIME(3),
  pending           INT,
  recovered         INT,
  workers_spawned   INT,
  workers_succeeded INT,
  workers_failed    INT,
  exit_code         INT,
  duration_ms       INT,
  KEY cycles_started (started_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      `CREATE TABLE IF NOT EXISTS worker_runs (
  worker_id   VARCHAR(255) NOT NULL,
  cycle_id    BIGINT NOT NULL,
  started_at  DATETIME(3) NOT NULL,
  finished_at DATETIME(3) NOT NULL,
  exit_code   INT,
  \`signal\`    VARCHAR(32),
  published   INT NOT NULL DEFAULT 0,
  retried     INT NOT NULL DEFAULT 0,
  failed      INT NOT NULL DEFAULT 0,
  PRIMARY KEY (cycle_id, worker_id),
  CONSTRAINT worker_runs_cycle FOREIGN KEY (cycle_id) REFERENCES cycles (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      // the coordination rows (see the PostgreSQL migration 4): a holder and an expiry on
      // the database's clock, nothing in a session
      `CREATE TABLE IF NOT EXISTS cycle_locks (
  host       VARCHAR(255) NOT NULL PRIMARY KEY,
  holder     VARCHAR(255) NOT NULL,
  machine    VARCHAR(255) NOT NULL,
  pid        INT NOT NULL,
  locked_at  DATETIME(3) NOT NULL,
  expires_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      `CREATE TABLE IF NOT EXISTS worker_slots (
  slot       INT NOT NULL PRIMARY KEY,
  holder     VARCHAR(255) NOT NULL,
  host       VARCHAR(255) NOT NULL,
  machine    VARCHAR(255) NOT NULL,
  pid        INT NOT NULL,
  expires_at DATETIME(3) NOT NULL,
  UNIQUE KEY worker_slots_holder (holder)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      // rate limits: one row per sliding window, the epoch-ms stamps (the database's
      // clock) of the latest sends it counted, ascending, at most its limit of them
      `CREATE TABLE IF NOT EXISTS rate_windows (
  \`key\`  VARCHAR(255) NOT NULL PRIMARY KEY,
  stamps JSON NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      `CREATE TABLE IF NOT EXISTS send_slots (
  \`key\`      VARCHAR(255) NOT NULL,
  slot       INT NOT NULL,
  holder     VARCHAR(255) NOT NULL,
  expires_at DATETIME(3) NOT NULL,
  PRIMARY KEY (\`key\`, slot),
  UNIQUE KEY send_slots_holder (holder)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      `CREATE TABLE IF NOT EXISTS post_attempts (
  post_id      BIGINT NOT NULL,
  attempt      INT NOT NULL,
  worker_id    VARCHAR(255),
  started_at   DATETIME(3),
  finished_at  DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  outcome      VARCHAR(16) NOT NULL,
  error        TEXT,
  external_id  TEXT,
  external_url TEXT,
  reason       VARCHAR(32),
  KEY post_attempts_post (post_id, attempt),
  KEY post_attempts_finished (finished_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      `CREATE TABLE IF NOT EXISTS alerts (
  post_id     BIGINT NOT NULL,
  claim_token BIGINT NOT NULL,
  outcome     VARCHAR(16) NOT NULL,
  created_at  DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  PRIMARY KEY (post_id, claim_token),
  CONSTRAINT alerts_post FOREIGN KEY (post_id) REFERENCES post_schedule (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
    ],
  },
];
