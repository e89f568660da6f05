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
  {
    version: 4,
    name: 'claim tokens and coordination rows',
    sql: `
-- Goes up by one with every claim and never down (a release gives the attempt back, not
-- the token): every worker update is fenced by it. No row is rewritten (a large table
-- migrates in moments): tokens start at 0 and only go up.
ALTER TABLE post_schedule ADD COLUMN claim_token bigint NOT NULL DEFAULT 0;
-- The time a post was scheduled for: run_at moves with retries, this does not (NULL for
-- posts scheduled before it existed: their run_at stands in).
ALTER TABLE post_schedule ADD COLUMN scheduled_at timestamptz;
-- Attempts made before the latest operator retry: MAX_ATTEMPTS counts from here, and
-- attempts keep counting over the post's life.
ALTER TABLE post_schedule ADD COLUMN attempts_base integer NOT NULL DEFAULT 0;
-- What a worker holds, read after a lost round trip.
CREATE INDEX post_schedule_worker ON post_schedule (worker_id) WHERE status = 'processing';
-- Finished posts by age: recent failures for status, and prune.
CREATE INDEX post_schedule_done ON post_schedule (updated_at) WHERE status IN ('published', 'failed', 'cancelled');
-- The latest failures, for status, however many posts were published.
CREATE INDEX post_schedule_failed ON post_schedule (updated_at, id) WHERE status = 'failed';

-- The coordination rows: rows with a holder and an expiry on the database's clock,
-- renewed while the holder lives. Nothing lives in a database session, so a lost
-- connection, a restart or a pooler cannot free them under a live holder, and a
-- frozen holder loses them at its expiry.
-- One row per SCHEDULER_HOST while a cycle runs there.
CREATE TABLE cycle_locks (
  host       text PRIMARY KEY,
  holder     text NOT NULL,
  machine    text NOT NULL,
  pid        integer NOT NULL,
  locked_at  timestamptz NOT NULL,
  expires_at timestamptz NOT NULL
);
-- GLOBAL_MAX_WORKERS: one row per worker slot in use, held by the worker's id.
CREATE TABLE worker_slots (
  slot       integer PRIMARY KEY,
  holder     text NOT NULL UNIQUE,
  host       text NOT NULL,
  machine    text NOT NULL,
  pid        integer NOT NULL,
  expires_at timestamptz NOT NULL
);
`,
  },
  {
    version: 5,
    name: 'sealed credentials',
    sql: `
-- A channel's credentials (tokens, passwords, a webhook's URL and secret), sealed with
-- AES-256-GCM under POST_SCHEDULER_SECRET_KEY (or stored plain when the operator says
-- so): never in \`settings\`, which may be shown.
ALTER TABLE channels ADD COLUMN credentials text;
-- Why the channel needs an operator (its credentials were refused by the network, or
-- cannot be opened with the key): its posts wait, without using up their attempts,
-- until a publish succeeds again or the channel gets new credentials.
ALTER TABLE channels ADD COLUMN attention text;
`,
  },
  {
    version: 6,
    name: 'rate windows and channel pauses',
    sql: `
-- Rate limits (src/ratelimits): one row per sliding window (channel:<id>:posts,
-- channel:<id>:requests) with the times (epoch ms on the database's clock, ascending)
-- of the latest sends it counted, at most its limit of them.
CREATE TABLE rate_windows (
  key    text PRIMARY KEY,
  stamps bigint[] NOT NULL DEFAULT '{}'
);
-- Sends in flight of a channel with a concurrency cap: one row per slot held, by one
-- send, until it ends or expires_at (a worker that died mid-send).
CREATE TABLE send_slots (
  key        text NOT NULL,
  slot       integer NOT NULL,
  holder     text NOT NULL UNIQUE,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (key, slot)
);
-- A channel the network told to wait (a 429, Retry-After): no send before paused_until.
ALTER TABLE channels ADD COLUMN paused_until timestamptz, ADD COLUMN pause_reason text;
-- Takes one slot of each window p_keys[i] (at most p_limits[i] per p_windows[i] ms) for
-- one send of channel p_channel, all or none. Returns minus the slot's time (epoch ms)
-- when taken, else the milliseconds until every window could grant one and the
-- channel's pause is over (> 0).
-- Locks the windows' rows in key order (two takers of overlapping sets cannot deadlock)
-- and reads the clock only once they are held: a stamp is never earlier than the send.
CREATE FUNCTION take_rate_slot(p_channel bigint, p_keys text[], p_limits integer[], p_windows bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
  now_ms bigint;
  wait_ms bigint;
  w record;
  recent bigint[];
BEGIN
  INSERT INTO rate_windows (key) SELECT k FROM unnest(p_keys) AS k ORDER BY k ON CONFLICT DO NOTHING;
  PERFORM 1 FROM rate_windows WHERE key = ANY (p_keys) ORDER BY key FOR UPDATE;
  now_ms := floor(extract(epoch FROM clock_timestamp()) * 1000);
  SELECT greatest(0, ceil(extract(epoch FROM c.paused_until) * 1000) - now_ms) INTO wait_ms FROM channels c WHERE c.id = p_channel;
  wait_ms := coalesce(wait_ms, 0);
  FOR w IN SELECT r.stamps, t.lim, t.win FROM rate_windows r JOIN unnest(p_keys, p_limits, p_windows) AS t(key, lim, win) ON r.key = t.key LOOP
    recent := ARRAY(SELECT s FROM unnest(w.stamps) AS s WHERE s > now_ms - w.win ORDER BY s);
    IF cardinality(recent) >= w.lim THEN
      -- free once the lim-th newest send leaves the window
      wait_ms := greatest(wait_ms, recent[cardinality(recent) - w.lim + 1] + w.win - now_ms);
    END IF;
  END LOOP;
  IF wait_ms > 0 THEN
    RETURN wait_ms;
  END IF;
  UPDATE rate_windows r
     SET stamps = ARRAY(SELECT s FROM (SELECT s FROM unnest(r.stamps || now_ms) AS s WHERE s > now_ms - t.win ORDER BY s DESC LIMIT t.lim) AS kept ORDER BY s)
    FROM unnest(p_keys, p_limits, p_windows) AS t(key, lim, win)
   WHERE r.key = t.key;
  RETURN -now_ms;
END
$fn$;
`,
  },
  {
    version: 7,
    name: 'post content parts',
    sql: `
-- The whole content when it is more than one text: images, or a thread (an array of
-- {text, images: [{source, alt}]}); NULL for a post of one part without images, whose
-- content is \`text\` (which always holds the first part's text).
ALTER TABLE post_details ADD COLUMN parts jsonb;
-- The parts of a thread already published, in order (an array of {externalId,
-- externalUrl, replyRef?}): a retry resumes after them and never sends one again.
-- A constant default: no rewrite of the table.
ALTER TABLE post_schedule ADD COLUMN published_parts jsonb NOT NULL DEFAULT '[]'::jsonb;
`,
  },
  {
    version: 8,
    name: 'managing posts and channels',
    sql: `
-- An operator's pause (channels pause/resume): while set, the channel's posts wait,
-- pending, and are not claimed (a network's 429 uses paused_until, which ends by itself).
ALTER TABLE channels ADD COLUMN paused_at timestamptz;
-- A removed channel (channels remove) stays as a row, so that the posts it published can
-- still be shown; its name is freed (see removeChannel).
ALTER TABLE channels ADD COLUMN removed_at timestamptz;
-- The caller's key of \`schedule --key\`: one post per key, whatever the channel.
ALTER TABLE post_schedule ADD COLUMN schedule_key text;
CREATE UNIQUE INDEX post_schedule_key ON post_schedule (schedule_key) WHERE schedule_key IS NOT NULL;
-- No index for posts list beyond the existing ones (pending posts by run_at, finished ones
-- by updated_at, the primary key): every claim and outcome rewrites its row into every
-- full index (status is in the partial indexes' predicates, so no update is HOT), and two
-- full indexes on (run_at, id) and (channel_id, run_at, id) made the claim path 1.7x
-- slower in a measurement; a list of other states sorts its matches instead.
-- One row per attempt that ended (posts show): written with its outcome.
CREATE TABLE post_attempts (
  post_id     bigint NOT NULL,
  attempt     integer NOT NULL,
  worker_id   text,
  started_at  timestamptz,
  finished_at timestamptz NOT NULL DEFAULT now(),
  outcome     text NOT NULL,
  error       text,
  external_id text,
  external_url text
);
CREATE INDEX post_attempts_post ON post_attempts (post_id, attempt);
`,
  },
  {
    // 8 is another change's (assigned numbers); the runner applies whatever is missing
    version: 9,
    name: 'alerts',
    sql: `
-- One row per outcome reported to ALERT_CHANNEL (src/alerts): a post that ended failed
-- or unknown under one claim (post_id, claim_token) is reported once, however many
-- dispatchers look. Goes with its post (prune).
CREATE TABLE alerts (
  post_id     bigint NOT NULL REFERENCES post_schedule(id) ON DELETE CASCADE,
  claim_token bigint NOT NULL,
  outcome     text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (post_id, claim_token)
);
`,
  },
  {
    version: 10,
    name: 'cycles by start',
    sql: `
-- serve's activity and \`tune\` read the cycles of a window by started_at (and prune deletes by it).
CREATE INDEX cycles_started ON cycles (started_at);
`,
  },
  {
    version: 11,
    name: 'attempt reasons',
    sql: `
-- Why an attempt did not publish (src/reasons.ts: rate-limited, timeout, auth, ...);
-- NULL for a published attempt and for the attempts recorded before this migration.
ALTER TABLE post_attempts ADD COLUMN reason text;
-- \`tune\` and /metrics read the attempts of a window by their end (a bounded range
-- read); one more index entry per attempt, on a table written once per attempt.
CREATE INDEX post_attempts_finished ON post_attempts (finished_at);
`,
  },
  {
    version: 12,
    name: 'due notifications',
    sql: `
-- daemon --precise sleeps until the next due time; a change that may move it earlier
-- wakes it (LISTEN post_scheduler_due, payload the schema): posts inserted pending (one
-- call per statement, however many rows: a 10,000-post schedule is one EXISTS over its
-- transition table), an operator's change (a post edited to an earlier run_at, a failed
-- or unknown post requeued), a channel resumed. Not the worker's paths: a claim, an
-- outcome, a retry or a release back to pending (processing -> pending) never notify, as
-- NOTIFY takes a database-wide lock at commit; the daemon's safety re-check (every
-- SAFETY_MS, 3 s) finds those. NOTIFY in one transaction is sent once.
CREATE FUNCTION post_scheduler_notify_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('post_scheduler_due', TG_TABLE_SCHEMA);
  RETURN NULL;
END
$$;
CREATE FUNCTION post_scheduler_notify_due_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM inserted WHERE status = 'pending') THEN
    PERFORM pg_notify('post_scheduler_due', TG_TABLE_SCHEMA);
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER post_schedule_due_insert AFTER INSERT ON post_schedule
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION post_scheduler_notify_due_inserted();
CREATE TRIGGER post_schedule_due_update AFTER UPDATE OF status, run_at ON post_schedule
  FOR EACH ROW WHEN (NEW.status = 'pending' AND (OLD.status NOT IN ('pending', 'processing') OR NEW.run_at < OLD.run_at))
  EXECUTE FUNCTION post_scheduler_notify_due();
CREATE TRIGGER channels_due_resume AFTER UPDATE OF paused_at ON channels
  FOR EACH ROW WHEN (OLD.paused_at IS NOT NULL AND NEW.paused_at IS NULL) EXECUTE FUNCTION post_scheduler_notify_due();
`,
  },
  {
    // the numbers between are other changes' (assigned numbers); the runner applies whatever is missing
    version: 14,
    name: 'published posts by channel',
    sql: `
-- Deadline-aware sizing (Store.dueByChannel): a channel's most recently published posts,
-- whose attempts give its publish latency. Partial: only a post's move to published
-- writes an entry; claims and retries never touch it.
CREATE INDEX post_schedule_published ON post_schedule (channel_id, updated_at) WHERE status = 'published';
`,
  },
];
