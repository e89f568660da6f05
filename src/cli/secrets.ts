import fs from 'node:fs/promises';
import { CliError } from './context.ts';

/**
 * Credentials for CLI flags without putting them on the command line (where `ps`, shell
 * history and audit logs see them): `--X-from env:NAME | file:PATH | stdin`. Messages
 * never quote the value, nor the source text itself (a value pasted by mistake).
 */
export const SECRET_SOURCES = 'env:NAME, file:PATH or stdin';

export interface SecretIo {
  readonly env: NodeJS.ProcessEnv;
  readStdin(): Promise<string>;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}

// The user names the variable; this is not configuration (that is read in src/config.ts).
const defaultIo: SecretIo = { env: process.env, readStdin: () => readAll(process.stdin) };

/** Reads one value from `source` (env:NAME, file:PATH, stdin); one trailing newline is dropped. */
export async function readSecretSource(flag: string, source: string, io: SecretIo = defaultIo): Promise<string> {
  let value: string;
  let from: string;
  if (source.startsWith('env:')) {
    const name = source.slice('env:'.length);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new CliError(`${flag} env:NAME needs a variable name (letters, digits, _)`);
    const found = io.env[name];
    if (found === undefined) throw new CliError(`${flag} env:${name}: the variable is not set`);
    value = found;
    from = `env:${name}`;
  } else if (source.startsWith('file:')) {
    const file = source.slice('file:'.length);
    if (file === '') throw new CliError(`${flag} file:PATH needs a path`);
    try {
      value = await fs.readFile(file, 'utf8');
    } catch (e) {
      throw new CliError(`${flag} file:${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    from = `file:${file}`;
  } else if (source === 'stdin') {
    value = await io.readStdin();
    from = 'stdin';
  } else {
    throw new CliError(`${flag} takes ${SECRET_SOURCES}`);
  }
  value = value.replace(/\r?\n$/, '');
  if (value === '') throw new CliError(`${flag} ${from}: the value is empty`);
  return value;
}

/**
 * The value of a credential given as `--X VALUE` or `--X-from SOURCE` (not both), or
 * undefined when neither is given.
 */
export async function secretFlag(
  name: string,
  direct: string | undefined,
  source: string | undefined,
  io: SecretIo = defaultIo,
): Promise<string | undefined> {
  if (direct !== undefined && source !== undefined) throw new CliError(`give --${name} or --${name}-from, not both`);
  if (source !== undefined) return readSecretSource(`--${name}-from`, source, io);
  return direct;
}

/** At most one flag of a command may read standard input. */
export function checkOneStdin(flags: readonly (readonly [string, string | undefined])[]): void {
  const readers = flags.filter(([, source]) => source === 'stdin').map(([flag]) => flag);
  if (readers.length > 1) throw new CliError(`only one flag can read stdin (${readers.join(', ')} both ask for it)`);
}
