import type { LogFormat } from './config.ts';
import { guardOutput } from './output.ts';

/**
 * Scoped loggers: `[CRON]`, `[DISPATCHER]`, `[WORKER worker-…]`, in the seed's
 * plain format by default or one JSON object a line with LOG_FORMAT=json.
 * Fields (post id, worker id, channel, cycle id, duration) are JSON keys in json
 * format and leave the text format as the seed's; LOG_TIMESTAMPS=true starts each
 * text line with its ISO time. Callers never pass secrets; URLs are redacted before
 * they reach a logger.
 */
export type Level = 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

export interface Logger {
  readonly scope: string;
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
  error(message: string, fields?: Fields): void;
  /** an empty line in text mode (the seed's spacing); nothing in JSON mode or with timestamps */
  blank(): void;
}

export interface LogOptions {
  readonly logFormat: LogFormat;
  /** text lines start with their ISO time */
  readonly logTimestamps?: boolean;
}

export type LogSink = (line: string) => void;

/** A closed stdout (EPIPE) never stops the program: see src/output.ts. */
const stdoutSink: LogSink = (line) => {
  guardOutput();
  process.stdout.write(line + '\n');
};

const stderrSink: LogSink = (line) => {
  guardOutput();
  process.stderr.write(line + '\n');
};

/** One log line, as text or as a JSON object. */
export function formatLine(options: LogOptions, level: Level, scope: string, message: string, fields?: Fields): string {
  const now = new Date().toISOString();
  if (options.logFormat === 'json') {
    return JSON.stringify({ time: now, level, scope, msg: message, ...plainFields(fields) });
  }
  const line = `[${scope}] ${message}`;
  return options.logTimestamps === true ? `${now} ${line}` : line;
}

export function createLogger(scope: string, options: LogFormat | LogOptions = 'text', sink: LogSink = stdoutSink): Logger {
  const opts: LogOptions = typeof options === 'string' ? { logFormat: options } : options;
  const write = (level: Level, message: string, fields?: Fields): void => {
    sink(formatLine(opts, level, scope, message, fields));
  };
  return {
    scope,
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    blank: () => {
      if (opts.logFormat === 'text' && opts.logTimestamps !== true) sink('');
    },
  };
}

/**
 * The same logger with `bound` on every line it writes (a worker id, a cycle id): JSON
 * keys in json format, nothing in text. Works on any Logger (the library's callers pass their own).
 */
export function withFields(log: Logger, bound: Fields): Logger {
  const merge = (fields?: Fields): Fields => (fields === undefined ? bound : { ...bound, ...fields });
  return {
    scope: log.scope,
    info: (m, f) => log.info(m, merge(f)),
    warn: (m, f) => log.warn(m, merge(f)),
    error: (m, f) => log.error(m, merge(f)),
    blank: () => log.blank(),
  };
}

/**
 * An error of a process entry point (a bad config, a database that cannot be opened, a
 * command's failure) on stderr: `post-scheduler: …` in text format, one JSON object with
 * `level: "error"` in json format.
 */
export function printError(message: string, format: LogFormat, fields?: Fields, prefix = 'post-scheduler'): void {
  printProblem('error', message, format, fields, prefix);
}

/**
 * With LOG_FORMAT=json, an error nobody caught (a throw in a timer, a rejected promise
 * nobody awaited) is one JSON line too, then the process exits 1 as Node would; in text
 * format Node's own report stays. The message only: a stack names files, not causes.
 */
export function reportUncaught(format: LogFormat, prefix = 'post-scheduler'): void {
  if (format !== 'json') return;
  const report = (e: unknown): void => {
    printError(`uncaught error: ${errorMessage(e)}`, 'json', {}, prefix);
    process.exit(1);
  };
  process.on('uncaughtException', report);
  process.on('unhandledRejection', report);
}

/** A warning of an entry point (e.g. TIMEOUT_MS against the cron interval), as printError. */
export function printWarning(message: string, format: LogFormat, fields?: Fields, prefix = 'post-scheduler'): void {
  printProblem('warn', message, format, fields, prefix);
}

/** A notice of an entry point (`post-scheduler: created a new database …`), as printError. */
export function printNotice(message: string, format: LogFormat, fields?: Fields, prefix = 'post-scheduler'): void {
  printProblem('info', message, format, fields, prefix);
}

function printProblem(level: Level, message: string, format: LogFormat, fields: Fields | undefined, prefix: string): void {
  if (format === 'json') stderrSink(formatLine({ logFormat: 'json' }, level, prefix, message, fields));
  else stderrSink(`${prefix}: ${level === 'warn' ? 'warning: ' : ''}${message}`);
}

/** Errors become {name, message} (never a stack with paths, nor extra properties that may hold a request). */
function plainFields(fields: Fields | undefined): Fields | undefined {
  if (fields === undefined) return undefined;
  let out: Fields | undefined;
  for (const [key, value] of Object.entries(fields)) {
    if (value instanceof Error) {
      out ??= { ...fields };
      out[key] = { name: value.name, message: value.message };
    }
  }
  return out ?? fields;
}

/** Coerces anything thrown into an Error, at the boundary where it is caught. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === 'string' ? value : JSON.stringify(value));
}

export function errorMessage(value: unknown): string {
  return toError(value).message;
}
