import { ConfigError, redactUrl } from '../config.ts';
import { StoreError } from '../store/store.ts';
import { CliError } from './context.ts';

/** One line for anything a command threw, with URLs' passwords hidden. */
export function cliErrorMessage(e: unknown): string {
  if (e instanceof CliError || e instanceof ConfigError || e instanceof StoreError) return firstLine(e.message);
  const message = e instanceof Error ? e.message : String(e);
  return firstLine(message.replace(/[a-z][a-z0-9+.-]*:\/\/[^\s"']+/gi, (url) => redactUrl(url)));
}

function firstLine(text: string): string {
  return text.split('\n')[0] ?? text;
}
