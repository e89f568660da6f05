/**
 * PostgreSQL migrations, numbered. Applied under an advisory lock, so that many
 * processes starting at once migrate exactly once. Never edit an applied migration.
 */
export const POSTGRES_MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
CREATE TABLE channels (
  id         bigserial PRIMARY KEY,
  name       text NOT NULL UNIQUE,
  platform   text NOT NULL,
  settings   jsonb NOT NULL DEFAULT '{}',
  enabled    boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE post_details (
  id         bigserial PRIMARY KEY,
  text       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE post_schedule (
  id               bigserial PRIMARY KEY,
  post_detail_id   bigint NOT NULL REFERENCES post_details(id),
  channel_id       bigint NOT NULL REFERENCES channels(id),
  run_at           timestamptz NOT NULL,
  status           text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'processing', 'published', 'failed', 'cancelled')),
  worker_id        text,
  locked_at        timestamptz,
  lease_expires_at timestamptz,
  attempts         integer NOT NULL DEFAULT 0,
  last_error       text,
  published_at     timestamptz,
  external_id      text,
  external_url     text,
  idempotency_key  text NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The due query (status = 'pending' AND run_at <= now(), ordered by run_at) reads only
-- this partial index, so posts scheduled for later or already done cost nothing.
CREATE INDEX post_schedule_due ON post_schedule (run_at, id) WHERE status = 'pending';
-- Recovery of expired leases reads only posts holding a lease (processing ones).
CREATE INDEX post_schedule_lease ON post_schedule (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

CREATE TABLE cycles (
  id                bigserial PRIMARY KEY,
  host              text NOT NULL,
  started_at        timestamptz NOT NULL,
  finished_at       timestamptz,
  pending           integer,
  recovered         integer,
  workers_spawned   integer,
  workers_succeeded integer,
  workers_failed    integer,
  exit_code         integer,
  duration_ms       integer
);

CREATE TABLE worker_runs (
  worker_id   text NOT NULL,
  cycle_id    bigint NOT NULL REFERENCES cycles(id),
  started_at  timestamptz NOT NULL,
  finished_at timestamptz NOT NULL,
  exit_code   integer,
  signal      text,
  published   integer NOT NULL DEFAULT 0,
  retried     integer NOT NULL DEFAULT 0,
  failed      integer NOT NULL DEFAULT 0,
  PRIMARY KEY (cycle_id, worker_id)
);
`,
  },
  {
    version: 3,
    name: 'unknown outcomes',
    sql: `
ALTER TABLE post_schedule DROP CONSTRAINT post_schedule_status_check;
ALTER TABLE post_schedule ADD CONSTRAINT post_schedule_status_check
  CHECK (status IN ('pending', 'processing', 'published', 'failed', 'cancelled', 'unknown'));
-- an earlier attempt may have been delivered (its outcome is unknown)
ALTER TABLE post_schedule ADD COLUMN unconfirmed boolean NOT NULL DEFAULT false;
-- Posts waiting for an operator, listed by status.
CREATE INDEX post_schedule_unknown ON post_schedule (updated_at) WHERE status = 'unknown';

-- What happens to a channel's post whose outcome is unknown. Existing file channels can
-- look up what they wrote; every other channel holds such posts for an operator.
ALTER TABLE channels ADD COLUMN on_unknown text NOT NULL DEFAULT 'hold'
  CHECK (on_unknown IN ('retry', 'check', 'hold'));
UPDATE channels SET on_unknown = 'check' WHERE platform = 'file';
`,
  },
];
