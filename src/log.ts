import type { LogFormat } from './config.ts';
import { guardOutput } from './output.ts';

/**
 * Scoped loggers: `[CRON]`, `[DISPATCHER]`, `[WORKER worker-…]`, in the seed's
 * plain format by default or one JSON object a line with LOG_FORMAT=json.
 * Callers never pass secrets; URLs are redacted before they reach a logger.
 */
export type Level = 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

export interface Logger {
  readonly scope: string;
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
  error(message: string, fields?: Fields): void;
  /** an empty line in text mode (the seed's spacing); nothing in JSON mode */
  blank(): void;
}

export type LogSink = (line: string) => void;

/** A closed stdout (EPIPE) never stops the program: see src/output.ts. */
const stdoutSink: LogSink = (line) => {
  guardOutput();
  process.stdout.write(line + '\n');
};

export function createLogger(scope: string, format: LogFormat = 'text', sink: LogSink = stdoutSink): Logger {
  const write = (level: Level, message: string, fields?: Fields): void => {
    if (format === 'json') {
      sink(JSON.stringify({ time: new Date().toISOString(), level, scope, msg: message, ...fields }));
    } else {
      sink(`[${scope}] ${message}`);
    }
  };
  return {
    scope,
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    blank: () => {
      if (format === 'text') sink('');
    },
  };
}

/** Coerces anything thrown into an Error, at the boundary where it is caught. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === 'string' ? value : JSON.stringify(value));
}

export function errorMessage(value: unknown): string {
  return toError(value).message;
}
