import { ConfigError, redactUrl } from '../config.ts';
import { StoreError } from '../store/store.ts';
import { CliError } from './context.ts';

/** One line for anything a command threw, with URLs' passwords hidden. */
export function cliErrorMessage(e: unknown): string {
  if (e instanceof CliError || e instanceof ConfigError || e instanceof StoreError) return firstLine(e.message);
  const message = e instanceof Error ? e.message : String(e);
  return firstLine(message.replace(/[a-z][a-z0-9+.-]*:\/\/[^\s"']+/gi, (url) => redactUrl(url)));
}

/** The first line, at most 300 characters: a driver may quote a whole statement's data. */
function firstLine(text: string): string {
  const line = text.split('\n')[0] ?? text;
  return line.length > 300 ? `${line.slice(0, 300)}… (${line.length} characters)` : line;
}
