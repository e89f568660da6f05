import os from 'node:os';
import path from 'node:path';
import * as v from 'valibot';
import { parseKey } from './credentials/vault.ts';

/**
 * All configuration is read, defaulted and validated here, and nowhere else reads
 * process.env. A bad value throws ConfigError with one line naming the variable and
 * the rule, before anything touches the database.
 */

export type DatabaseTarget =
  | { readonly dialect: 'sqlite'; readonly path: string }
  | {
      readonly dialect: 'postgres';
      /** connection URL without our own `schema` parameter; may hold a password */
      readonly url: string;
      /** the schema of post-scheduler's tables: `?schema=NAME`, else post_scheduler */
      readonly schema: string;
    }
  | {
      readonly dialect: 'mysql';
      /** connection URL (mysql://, a mariadb:// one rewritten to it); may hold a password */
      readonly url: string;
      /** the database of post-scheduler's tables: the URL's path */
      readonly database: string;
    };

export type LogFormat = 'text' | 'json';

/**
 * How a cycle sizes its workers: `seed`, the seed's formula from the due count;
 * `deadline`, from the due posts and each channel's measured publish latency (src/sizing).
 */
export type WorkerSizing = 'seed' | 'deadline';

export interface Config {
  readonly database: DatabaseTarget;
  /** the database as it may be shown: password replaced by *** */
  readonly databaseLabel: string;
  /** posts per worker, for the scaling formula and the most a worker claims at once */
  readonly batchSize: number;
  readonly maxWorkers: number;
  readonly minWorkers: number;
  /**
   * workers running at once across every dispatcher (host) on this database; null:
   * no cap beyond each host's MAX_WORKERS
   */
  readonly globalMaxWorkers: number | null;
  /** the cycle's guard: workers still running then are stopped and the cycle exits 2 */
  readonly timeoutMs: number;
  /** a worker's own budget; always below timeoutMs */
  readonly workerTimeoutMs: number;
  /** posts one worker publishes at the same time */
  readonly workerConcurrency: number;
  readonly workerSizing: WorkerSizing;
  readonly maxAttempts: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** one publish request's timeout (webhook) */
  readonly publishTimeoutMs: number;
  /**
   * a claim's lease: a live worker renews it every third of it while it holds the
   * post; a dead worker's posts are recovered by the first cycle after it ran out
   */
  readonly leaseMs: number;
  /** between SIGTERM and SIGKILL when the dispatcher stops its workers */
  readonly killGraceMs: number;
  /**
   * `daemon --precise`: how long a resident worker stays, connected and idle, after its
   * last post for what falls due next, before it is told to exit
   */
  readonly workerIdleMs: number;
  /**
   * `daemon --precise`: a resident worker whose V8 heap holds more than this many MB
   * after a batch is told to exit, and a fresh one takes its place at the next due time
   * (a worker's old generation has no cap of its own, see workers/v8-settings.ts)
   */
  readonly workerMaxHeapMb: number;
  readonly logFormat: LogFormat;
  /** text log lines start with their ISO time (the seed dates only a run's first line) */
  readonly logTimestamps: boolean;
  /**
   * the channel (any platform) where a post that ends failed or unknown is reported,
   * one message each (src/alerts); null: no alerts
   */
  readonly alertChannel: string | null;
  /** this machine's name for the cycle lock and the cycle records (default: the hostname) */
  readonly host: string;
  /**
   * publishers may connect to loopback, private and link-local addresses for every
   * channel (a channel can also opt in alone); off by default: SSRF protection
   */
  readonly allowPrivateNetwork: boolean;
  /** the longest one database round trip may take before the connection is given up */
  readonly dbTimeoutMs: number;
  /** the key that seals channel credentials at rest (AES-256-GCM); null when not set */
  readonly secretKey: Buffer | null;
  /** the previous key during a rotation: still opens what it sealed (see channels rekey) */
  readonly oldSecretKey: Buffer | null;
  /**
   * the folder whose ES modules `module` channels may load (absolute, as given: each use
   * resolves it with realpath); null when not set: module channels are refused
   */
  readonly moduleDir: string | null;
  /**
   * `serve`: the folder an image path given over the HTTP API must lie in (absolute, as
   * given: each use resolves it with realpath, so `..` and symlinks cannot leave it);
   * null when not set: the API refuses image paths (http(s) URLs only)
   */
  readonly mediaDir: string | null;
  /**
   * `serve`: the bearer token every request but /healthz must carry (a secret: never
   * logged or printed); null: no token, and the server listens on loopback only
   */
  readonly apiToken: string | null;
  /** `serve`: the address and port it listens on (port 0: any free port, printed) */
  readonly serveHost: string;
  readonly servePort: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The environment variables this program reads, with their defaults. */
export const ENV_DEFAULTS = {
  DATABASE_URL: '',
  BATCH_SIZE: '5',
  MAX_WORKERS: '5',
  MIN_WORKERS: '1',
  GLOBAL_MAX_WORKERS: '',
  TIMEOUT_MS: '55000',
  WORKER_TIMEOUT_MS: '50000',
  WORKER_CONCURRENCY: '',
  WORKER_SIZING: 'seed',
  MAX_ATTEMPTS: '5',
  RETRY_BASE_MS: '30000',
  RETRY_MAX_MS: '3600000',
  // empty: 10000, or WORKER_TIMEOUT_MS when that is shorter
  PUBLISH_TIMEOUT_MS: '',
  LEASE_MS: '30000',
  KILL_GRACE_MS: '3000',
  WORKER_IDLE_MS: '5000',
  WORKER_MAX_HEAP_MB: '96',
  LOG_FORMAT: 'text',
  LOG_TIMESTAMPS: 'false',
  // empty: no alerts; else the name of an existing channel
  ALERT_CHANNEL: '',
  SCHEDULER_HOST: '',
  ALLOW_PRIVATE_NETWORK: 'false',
  DB_TIMEOUT_MS: '10000',
  POST_SCHEDULER_SECRET_KEY: '',
  POST_SCHEDULER_OLD_SECRET_KEY: '',
  // empty: no module channels (loading code is a privilege the operator grants)
  MODULE_DIR: '',
  // empty: the HTTP API takes image URLs only, no file paths
  MEDIA_DIR: '',
  // empty: serve listens on loopback only, without authentication
  API_TOKEN: '',
  SERVE_HOST: '127.0.0.1',
  SERVE_PORT: '8080',
} as const;

export type EnvName = keyof typeof ENV_DEFAULTS;
export type ConfigInput = Partial<Record<EnvName, string | undefined>>;

/**
 * The PostgreSQL schema of post-scheduler's tables when DATABASE_URL names none: its
 * own, so that its tables never meet an application's (`channels`, `schema_migrations`).
 */
export const DEFAULT_SCHEMA = 'post_scheduler';

export const DEFAULT_SQLITE_PATH = path.join('data', 'post-scheduler.db');

const integer = (name: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  v.pipe(
    v.string(),
    v.trim(),
    v.regex(/^-?\d+$/, `${name} must be a whole number`),
    v.transform(Number),
    v.minValue(min, `${name} must be at least ${min}`),
    v.maxValue(max, `${name} must be at most ${max}`),
  );

const schema = v.object({
  DATABASE_URL: v.string(),
  BATCH_SIZE: integer('BATCH_SIZE', 1, 10_000),
  MAX_WORKERS: integer('MAX_WORKERS', 1, 1_000),
  MIN_WORKERS: integer('MIN_WORKERS', 1, 1_000),
  GLOBAL_MAX_WORKERS: v.union([v.literal(''), integer('GLOBAL_MAX_WORKERS', 1, 10_000)], 'GLOBAL_MAX_WORKERS must be a whole number from 1 to 10000'),
  TIMEOUT_MS: integer('TIMEOUT_MS', 100),
  WORKER_TIMEOUT_MS: integer('WORKER_TIMEOUT_MS', 50),
  WORKER_CONCURRENCY: v.union([v.literal(''), integer('WORKER_CONCURRENCY', 1, 10_000)], 'WORKER_CONCURRENCY must be a whole number from 1 to 10000'),
  WORKER_SIZING: v.pipe(v.string(), v.trim(), v.picklist(['seed', 'deadline'], 'WORKER_SIZING must be "seed" or "deadline"')),
  MAX_ATTEMPTS: integer('MAX_ATTEMPTS', 1, 1_000),
  RETRY_BASE_MS: integer('RETRY_BASE_MS', 0),
  RETRY_MAX_MS: integer('RETRY_MAX_MS', 0),
  PUBLISH_TIMEOUT_MS: v.union([v.literal(''), integer('PUBLISH_TIMEOUT_MS', 1)], 'PUBLISH_TIMEOUT_MS must be a whole number of at least 1'),
  LEASE_MS: integer('LEASE_MS', 100),
  KILL_GRACE_MS: integer('KILL_GRACE_MS', 0),
  WORKER_IDLE_MS: integer('WORKER_IDLE_MS', 0, 3_600_000),
  WORKER_MAX_HEAP_MB: integer('WORKER_MAX_HEAP_MB', 1, 65_536),
  LOG_FORMAT: v.picklist(['text', 'json'], 'LOG_FORMAT must be "text" or "json"'),
  LOG_TIMESTAMPS: v.pipe(
    v.string(),
    v.trim(),
    v.toLowerCase(),
    v.picklist(['true', 'false', '1', '0', 'yes', 'no'], 'LOG_TIMESTAMPS must be true or false'),
  ),
  ALERT_CHANNEL: v.pipe(v.string(), v.trim(), v.maxLength(200, 'ALERT_CHANNEL must be at most 200 characters')),
  SCHEDULER_HOST: v.pipe(v.string(), v.trim(), v.maxLength(255, 'SCHEDULER_HOST must be at most 255 characters')),
  ALLOW_PRIVATE_NETWORK: v.pipe(
    v.string(),
    v.trim(),
    v.toLowerCase(),
    v.picklist(['true', 'false', '1', '0', 'yes', 'no'], 'ALLOW_PRIVATE_NETWORK must be true or false'),
  ),
  DB_TIMEOUT_MS: integer('DB_TIMEOUT_MS', 100, 600_000),
  POST_SCHEDULER_SECRET_KEY: v.string(),
  POST_SCHEDULER_OLD_SECRET_KEY: v.string(),
  MODULE_DIR: v.pipe(v.string(), v.trim()),
  MEDIA_DIR: v.pipe(v.string(), v.trim(), v.maxLength(4096, 'MEDIA_DIR must be at most 4096 characters')),
  API_TOKEN: v.union(
    [v.literal(''), v.pipe(v.string(), v.regex(/^[\x21-\x7e]{16,512}$/, 'API_TOKEN'))],
    'API_TOKEN must be 16 to 512 printable characters without spaces',
  ),
  SERVE_HOST: v.pipe(v.string(), v.trim(), v.minLength(1, 'SERVE_HOST must not be empty'), v.maxLength(255, 'SERVE_HOST must be at most 255 characters')),
  SERVE_PORT: integer('SERVE_PORT', 0, 65_535),
});

/** Rules between variables, checked after each one is valid on its own. */
function crossCheck(c: v.InferOutput<typeof schema>): string | null {
  if (c.MIN_WORKERS > c.MAX_WORKERS) return `MIN_WORKERS (${c.MIN_WORKERS}) must not exceed MAX_WORKERS (${c.MAX_WORKERS})`;
  if (c.WORKER_TIMEOUT_MS >= c.TIMEOUT_MS) {
    return `WORKER_TIMEOUT_MS (${c.WORKER_TIMEOUT_MS}) must be less than TIMEOUT_MS (${c.TIMEOUT_MS})`;
  }
  if (c.PUBLISH_TIMEOUT_MS !== '' && c.PUBLISH_TIMEOUT_MS > c.WORKER_TIMEOUT_MS) {
    return `PUBLISH_TIMEOUT_MS (${c.PUBLISH_TIMEOUT_MS}) must not exceed WORKER_TIMEOUT_MS (${c.WORKER_TIMEOUT_MS}): a worker could never wait for a whole publish`;
  }
  if (c.RETRY_BASE_MS > c.RETRY_MAX_MS) return `RETRY_BASE_MS (${c.RETRY_BASE_MS}) must not exceed RETRY_MAX_MS (${c.RETRY_MAX_MS})`;
  return null;
}

/**
 * Reads the configuration from environment variables, with `overrides` (from CLI
 * flags) taking precedence. Returns a frozen Config or throws ConfigError.
 */
export function loadConfig(env: ConfigInput = process.env, overrides: ConfigInput = {}): Config {
  const raw: Record<string, string> = {};
  for (const key of Object.keys(ENV_DEFAULTS) as EnvName[]) {
    const value = overrides[key] ?? env[key];
    raw[key] = value === undefined ? ENV_DEFAULTS[key] : value;
  }
  const parsed = v.safeParse(schema, raw);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const key = issue.path?.[0]?.key;
    const name = typeof key === 'string' ? key : 'configuration';
    const shown = name in raw && name !== 'DATABASE_URL' && name !== 'API_TOKEN' && !name.startsWith('POST_SCHEDULER_') ? ` (got "${raw[name] ?? ''}")` : '';
    throw new ConfigError(`Invalid configuration: ${issue.message}${shown}`);
  }
  const c = parsed.output;
  const broken = crossCheck(c);
  if (broken !== null) throw new ConfigError(`Invalid configuration: ${broken}`);
  const database = parseDatabaseUrl(c.DATABASE_URL);
  let secretKey: Buffer | null;
  let oldSecretKey: Buffer | null;
  try {
    secretKey = parseKey(c.POST_SCHEDULER_SECRET_KEY);
    oldSecretKey = parseKey(c.POST_SCHEDULER_OLD_SECRET_KEY, 'POST_SCHEDULER_OLD_SECRET_KEY');
  } catch (e) {
    throw new ConfigError(`Invalid configuration: ${(e as Error).message}`);
  }
  return Object.freeze({
    database,
    databaseLabel: describeDatabase(database),
    batchSize: c.BATCH_SIZE,
    maxWorkers: c.MAX_WORKERS,
    minWorkers: c.MIN_WORKERS,
    globalMaxWorkers: c.GLOBAL_MAX_WORKERS === '' ? null : c.GLOBAL_MAX_WORKERS,
    timeoutMs: c.TIMEOUT_MS,
    workerTimeoutMs: c.WORKER_TIMEOUT_MS,
    workerConcurrency: c.WORKER_CONCURRENCY === '' ? c.BATCH_SIZE : c.WORKER_CONCURRENCY,
    workerSizing: c.WORKER_SIZING,
    maxAttempts: c.MAX_ATTEMPTS,
    retryBaseMs: c.RETRY_BASE_MS,
    retryMaxMs: c.RETRY_MAX_MS,
    publishTimeoutMs: c.PUBLISH_TIMEOUT_MS === '' ? Math.min(10_000, c.WORKER_TIMEOUT_MS) : c.PUBLISH_TIMEOUT_MS,
    leaseMs: c.LEASE_MS,
    killGraceMs: c.KILL_GRACE_MS,
    workerIdleMs: c.WORKER_IDLE_MS,
    workerMaxHeapMb: c.WORKER_MAX_HEAP_MB,
    logFormat: c.LOG_FORMAT,
    logTimestamps: ['true', '1', 'yes'].includes(c.LOG_TIMESTAMPS),
    alertChannel: c.ALERT_CHANNEL === '' ? null : c.ALERT_CHANNEL,
    host: c.SCHEDULER_HOST === '' ? os.hostname() : c.SCHEDULER_HOST,
    allowPrivateNetwork: ['true', '1', 'yes'].includes(c.ALLOW_PRIVATE_NETWORK),
    dbTimeoutMs: c.DB_TIMEOUT_MS,
    secretKey,
    oldSecretKey,
    moduleDir: c.MODULE_DIR === '' ? null : path.resolve(c.MODULE_DIR),
    mediaDir: c.MEDIA_DIR === '' ? null : path.resolve(c.MEDIA_DIR),
    apiToken: c.API_TOKEN === '' ? null : c.API_TOKEN,
    serveHost: c.SERVE_HOST,
    servePort: c.SERVE_PORT,
  });
}

/**
 * The log format asked for, even when the rest of the configuration is bad: a config
 * error is printed in it (JSON when LOG_FORMAT=json), before any Config exists.
 */
export function requestedLogFormat(env: ConfigInput = process.env, overrides: ConfigInput = {}): LogFormat {
  return (overrides.LOG_FORMAT ?? env.LOG_FORMAT)?.trim() === 'json' ? 'json' : 'text';
}

/** The interval at which system cron starts `post-scheduler cron` (README, Deployment). */
export const CRON_INTERVAL_MS = 60_000;

/**
 * `cron` cannot see the crontab, so a TIMEOUT_MS that is not below a minute is only
 * worth a warning (one line), on the assumption of the usual every-minute entry.
 */
export function cronIntervalWarning(config: Config): string | null {
  if (config.timeoutMs < CRON_INTERVAL_MS) return null;
  return (
    `TIMEOUT_MS (${config.timeoutMs}) is not below the one-minute cron interval: ` +
    'a cycle can still run when cron starts the next one, which then exits at once and that minute publishes nothing'
  );
}

/**
 * The daemon knows its schedule: TIMEOUT_MS must be below the shortest interval
 * between its runs (`intervalMs`), or a cycle would still run at the next trigger.
 */
export function scheduleIntervalProblem(config: Config, intervalMs: number, schedule: string): string | null {
  if (config.timeoutMs < intervalMs) return null;
  return `Invalid configuration: TIMEOUT_MS (${config.timeoutMs}) must be below the interval of ${schedule} (${intervalMs}ms between runs)`;
}

/** The environment a worker process needs to rebuild exactly this config. */
export function configToEnv(config: Config): Record<EnvName, string> {
  const db = config.database;
  let databaseUrl: string;
  if (db.dialect === 'sqlite') {
    databaseUrl = `sqlite:${db.path}`;
  } else if (db.dialect === 'mysql') {
    databaseUrl = db.url;
  } else {
    const u = new URL(db.url);
    u.searchParams.set('schema', db.schema);
    databaseUrl = u.toString();
  }
  return {
    DATABASE_URL: databaseUrl,
    BATCH_SIZE: String(config.batchSize),
    MAX_WORKERS: String(config.maxWorkers),
    MIN_WORKERS: String(config.minWorkers),
    GLOBAL_MAX_WORKERS: config.globalMaxWorkers === null ? '' : String(config.globalMaxWorkers),
    TIMEOUT_MS: String(config.timeoutMs),
    WORKER_TIMEOUT_MS: String(config.workerTimeoutMs),
    WORKER_CONCURRENCY: String(config.workerConcurrency),
    WORKER_SIZING: config.workerSizing,
    MAX_ATTEMPTS: String(config.maxAttempts),
    RETRY_BASE_MS: String(config.retryBaseMs),
    RETRY_MAX_MS: String(config.retryMaxMs),
    PUBLISH_TIMEOUT_MS: String(config.publishTimeoutMs),
    LEASE_MS: String(config.leaseMs),
    KILL_GRACE_MS: String(config.killGraceMs),
    WORKER_IDLE_MS: String(config.workerIdleMs),
    WORKER_MAX_HEAP_MB: String(config.workerMaxHeapMb),
    LOG_FORMAT: config.logFormat,
    LOG_TIMESTAMPS: String(config.logTimestamps),
    ALERT_CHANNEL: config.alertChannel ?? '',
    SCHEDULER_HOST: config.host,
    ALLOW_PRIVATE_NETWORK: String(config.allowPrivateNetwork),
    DB_TIMEOUT_MS: String(config.dbTimeoutMs),
    POST_SCHEDULER_SECRET_KEY: config.secretKey === null ? '' : config.secretKey.toString('hex'),
    POST_SCHEDULER_OLD_SECRET_KEY: config.oldSecretKey === null ? '' : config.oldSecretKey.toString('hex'),
    MODULE_DIR: config.moduleDir ?? '',
    MEDIA_DIR: config.mediaDir ?? '',
    // a worker serves nothing: the token stays in the serving process
    API_TOKEN: '',
    SERVE_HOST: '127.0.0.1',
    SERVE_PORT: String(config.servePort),
  };
}

export function parseDatabaseUrl(value: string): DatabaseTarget {
  const trimmed = value.trim();
  if (trimmed === '') return { dialect: 'sqlite', path: path.resolve(DEFAULT_SQLITE_PATH) };
  if (trimmed.startsWith('sqlite:')) {
    const file = trimmed.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (file === '') throw new ConfigError('Invalid configuration: DATABASE_URL "sqlite:" needs a file path, e.g. sqlite:./data/app.db');
    return { dialect: 'sqlite', path: path.resolve(file) };
  }
  if (/^postgres(ql)?:\/\//.test(trimmed)) {
    let u: URL;
    try {
      u = new URL(trimmed);
    } catch {
      throw new ConfigError('Invalid configuration: DATABASE_URL is not a valid postgres:// URL');
    }
    if (u.hostname === '' && !u.searchParams.has('host')) {
      throw new ConfigError('Invalid configuration: DATABASE_URL has no host');
    }
    const schemaName = u.searchParams.get('schema');
    if (schemaName !== null && !/^[a-z_][a-z0-9_]{0,62}$/.test(schemaName)) {
      throw new ConfigError('Invalid configuration: DATABASE_URL schema must be a plain lower-case identifier (a-z, digits, _)');
    }
    u.searchParams.delete('schema');
    return { dialect: 'postgres', url: u.toString(), schema: schemaName ?? DEFAULT_SCHEMA };
  }
  if (/^(mysql|mariadb):\/\//.test(trimmed)) return parseMysqlUrl(trimmed);
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(trimmed)?.[1];
  throw new ConfigError(
    `Invalid configuration: DATABASE_URL must start with sqlite:, postgres:// or mysql:// (got ${scheme === undefined ? 'no scheme' : `"${scheme}:"`})`,
  );
}

/** mysql://user:pass@host:3306/db (or mariadb://): MySQL 8 or MariaDB 10.6+. */
function parseMysqlUrl(value: string): DatabaseTarget {
  let u: URL;
  try {
    u = new URL(value.replace(/^mariadb:/, 'mysql:'));
  } catch {
    throw new ConfigError('Invalid configuration: DATABASE_URL is not a valid mysql:// URL');
  }
  if (u.hostname === '') throw new ConfigError('Invalid configuration: DATABASE_URL has no host');
  const database = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (!/^[A-Za-z_][A-Za-z0-9_$]{0,63}$/.test(database)) {
    throw new ConfigError(
      `Invalid configuration: DATABASE_URL needs a database name of letters, digits and _ after the host, e.g. mysql://user:pass@127.0.0.1:3306/post_scheduler`,
    );
  }
  return { dialect: 'mysql', url: u.toString(), database };
}

/**
 * `serve` refuses to listen beyond loopback without API_TOKEN (checked by serve alone:
 * other commands never listen, so a SERVE_HOST they inherit does not stop them).
 */
export function serveRefusal(config: Config): string | null {
  if (config.apiToken !== null || isLoopback(config.serveHost)) return null;
  return `Invalid configuration: ${config.serveHost} is not a loopback address: set API_TOKEN before serving beyond this machine`;
}

/** 127.0.0.0/8, ::1 and localhost: addresses no other machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Replaces a password in a URL with ***; leaves anything else as it is. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    for (const key of [...u.searchParams.keys()]) {
      if (/pass|secret|token/i.test(key)) u.searchParams.set(key, '***');
    }
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@');
  }
}

export function describeDatabase(db: DatabaseTarget): string {
  if (db.dialect === 'sqlite') return `sqlite:${db.path}`;
  if (db.dialect === 'mysql') return redactUrl(db.url);
  return `${redactUrl(db.url)} (schema ${db.schema})`;
}
