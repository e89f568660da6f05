import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as v from 'valibot';
import { ON_UNKNOWN, type OnUnknown } from '../types.ts';
import {
  CredentialsRejectedError,
  parseWith,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type Publisher,
  type MediaLimits,
  type PublisherModule,
  type PublisherOptions,
  type PublishRequest,
  type PublishResult,
} from './publisher.ts';

/**
 * `module`: the channel's posts go through a user's own ES module, which implements the
 * Publisher interface: its default export (or its export `publisher`) is an object with
 * `createPublisher(options)` returning `{ publish(request), lookup?(request), close() }`,
 * and optionally `checkText(text, settings)`, `canLookUp`, `defaultOnUnknown`, and what
 * content it takes: `media` ({maxImages, maxBytes, maxAltLength, types}: it gets each
 * part's images, read, as `request.images`) and `threads` (true: it gets the parts of a
 * thread one by one, with `request.part` and `request.replyTo`).
 *
 * Loading code is a privilege. The operator names a folder (MODULE_DIR); `channels add
 * --module FILE` resolves FILE with realpath (symlinks followed) and refuses it unless it
 * lies inside that folder (realpath'd too) and ends in .js or .mjs, and stores the
 * absolute path (`module_path`). The worker checks again before every publish, against
 * its own MODULE_DIR: unset, or the file now resolving outside it, fails the post.
 *
 * Only the command line may create or change a module channel: any HTTP API added later
 * must refuse platform `module` (and a change of a module channel's settings) outright,
 * or whoever can call it could run code inside the scheduler.
 */
export interface UserModule {
  createPublisher(options: PublisherOptions): Publisher;
  checkText?(text: string, settings: Record<string, unknown>, images?: number): string | null;
  readonly canLookUp?: boolean;
  readonly defaultOnUnknown?: OnUnknown;
  /** the images one part may carry; absent or null: text only */
  readonly media?: MediaLimits | null;
  /** whether it publishes threads */
  readonly threads?: boolean;
}

const mediaSchema = v.nullish(
  v.object({
    maxImages: v.pipe(v.number(), v.integer(), v.minValue(1)),
    maxBytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
    maxAltLength: v.pipe(v.number(), v.integer(), v.minValue(0)),
    types: v.pipe(v.array(v.picklist(['image/jpeg', 'image/png', 'image/gif', 'image/webp'])), v.minLength(1)),
  }),
);

const settingsSchema = v.object(
  {
    module_path: v.pipe(
      v.string('module channel needs module_path'),
      v.check((p) => path.isAbsolute(p), 'module channel: module_path must be absolute'),
    ),
  },
  'module channel needs module_path',
);

function parseSettings(settings: Record<string, unknown>): { module_path: string } {
  return parseWith(settingsSchema, settings);
}

/**
 * The real path of `file` if it may be loaded: inside MODULE_DIR (both through realpath),
 * a regular file ending .js or .mjs. Throws SettingsError in one line otherwise.
 */
export async function resolveModulePath(file: string, moduleDir: string | null | undefined): Promise<string> {
  if (moduleDir === null || moduleDir === undefined || moduleDir === '') {
    throw new SettingsError('MODULE_DIR is not set: module channels are off (set it to the folder whose modules may be loaded)');
  }
  let dir: string;
  try {
    dir = await fs.realpath(moduleDir);
  } catch {
    throw new SettingsError(`MODULE_DIR ${moduleDir} does not exist`);
  }
  let real: string;
  try {
    real = await fs.realpath(path.resolve(file));
  } catch {
    throw new SettingsError(`module ${file} does not exist`);
  }
  const relative = path.relative(dir, real);
  if (relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) {
    throw new SettingsError(`module ${file} is not inside MODULE_DIR ${dir} (resolved: ${real})`);
  }
  if (!/\.m?js$/.test(real)) throw new SettingsError(`module ${file} must be a .js or .mjs file`);
  const stat = await fs.stat(real);
  if (!stat.isFile()) throw new SettingsError(`module ${file} is not a file`);
  return real;
}

/**
 * The worker's entry, when it starts the bundle from its V8 code cache, puts here an
 * import() of its own: in Node 20 code compiled from a code cache has none (scripts/bundle.mjs).
 */
export const USER_MODULE_IMPORT = Symbol.for('post-scheduler.importUserModule');

/**
 * Imports a user's module and checks its shape. Throws an Error naming what is wrong
 * (the module's own exception when it throws while loading).
 */
export async function importUserModule(file: string): Promise<UserModule> {
  const entryImport = (globalThis as Record<symbol, unknown>)[USER_MODULE_IMPORT] as ((url: string) => Promise<unknown>) | undefined;
  const url = pathToFileURL(file).href;
  const exports = (await (entryImport === undefined ? import(url) : entryImport(url))) as Record<string, unknown>;
  const candidate = exports['default'] ?? exports['publisher'];
  if (typeof candidate !== 'object' || candidate === null) {
    throw new Error(`module ${file} exports no publisher (a default export, or an export named "publisher")`);
  }
  const m = candidate as Record<string, unknown>;
  if (typeof m['createPublisher'] !== 'function') throw new Error(`module ${file}: its publisher has no createPublisher(options)`);
  if (m['checkText'] !== undefined && typeof m['checkText'] !== 'function') throw new Error(`module ${file}: checkText must be a function`);
  if (m['canLookUp'] !== undefined && typeof m['canLookUp'] !== 'boolean') throw new Error(`module ${file}: canLookUp must be true or false`);
  if (!v.is(mediaSchema, m['media'])) {
    throw new Error(`module ${file}: media must be {maxImages, maxBytes, maxAltLength, types: image/jpeg, image/png, image/gif or image/webp}`);
  }
  if (m['threads'] !== undefined && typeof m['threads'] !== 'boolean') throw new Error(`module ${file}: threads must be true or false`);
  const policy = m['defaultOnUnknown'];
  if (policy !== undefined && !(ON_UNKNOWN as readonly unknown[]).includes(policy)) {
    throw new Error(`module ${file}: defaultOnUnknown must be one of ${ON_UNKNOWN.join(', ')}`);
  }
  return candidate as UserModule;
}

/** What a channel of this user module does with unknown outcomes when none is given, and whether it can check. */
export function userPolicy(user: UserModule): { defaultOnUnknown: OnUnknown; canLookUp: boolean } {
  return { defaultOnUnknown: user.defaultOnUnknown ?? 'hold', canLookUp: user.canLookUp === true };
}

/**
 * A user module's errors as the worker's own classes. A module cannot share ours by
 * identity (the worker is a bundle; the module imports the package, or nothing), so the
 * error's name decides: PermanentPublishError, RetryablePublishError (with retryAfterMs
 * maybeDelivered and rateLimited) and CredentialsRejectedError. Anything else is left as it is.
 */
function asOurs(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  if (e instanceof PermanentPublishError || e instanceof RetryablePublishError || e instanceof CredentialsRejectedError || e instanceof SettingsError) return e;
  const fields = e as Error & { retryAfterMs?: unknown; maybeDelivered?: unknown; rateLimited?: unknown };
  switch (e.name) {
    case 'PermanentPublishError':
      return new PermanentPublishError(e.message);
    case 'RetryablePublishError':
      return new RetryablePublishError(e.message, typeof fields.retryAfterMs === 'number' ? fields.retryAfterMs : null, fields.maybeDelivered === true, fields.rateLimited === true);
    case 'CredentialsRejectedError':
      return new CredentialsRejectedError(e.message);
    default:
      return e;
  }
}

interface Loaded {
  readonly user: UserModule;
  readonly publisher: Publisher;
}

export const modulePublisher: PublisherModule = {
  platform: 'module',
  parseSettings,
  redactSettings: (settings) => settings,
  // the user module's own checkText runs before every publish (and when scheduling, see cli/posts.ts)
  checkText: () => null,
  // per channel: the user module's own (channels add / update load it to see)
  canLookUp: false,
  defaultOnUnknown: 'hold',
  createPublisher(options: PublisherOptions): Publisher {
    // one load and one publisher per module path in this worker
    const loaded = new Map<string, Promise<Loaded>>();

    const load = async (request: PublishRequest): Promise<Loaded> => {
      const channel = request.channel.name;
      let file: string;
      try {
        file = await resolveModulePath(parseSettings(request.channel.settings).module_path, options.moduleDir);
      } catch (e) {
        throw new PermanentPublishError(`channel ${channel}: ${e instanceof Error ? e.message : String(e)}`);
      }
      let entry = loaded.get(file);
      if (entry === undefined) {
        entry = importUserModule(file).then((user) => ({ user, publisher: user.createPublisher(options) }));
        loaded.set(file, entry);
        // a failed load is tried again by the next publish (the file may be fixed meanwhile)
        entry.catch(() => loaded.delete(file));
      }
      try {
        return await entry;
      } catch (e) {
        // nothing was sent: retryable, never maybe delivered
        throw new RetryablePublishError(`channel ${channel}: module ${file} failed to load: ${e instanceof Error ? e.message : String(e)}`);
      }
    };

    return {
      async publish(request: PublishRequest): Promise<PublishResult> {
        const { user, publisher } = await load(request);
        let problem: string | null;
        try {
          problem = user.checkText === undefined ? null : user.checkText(request.text, request.channel.settings, request.images.length);
        } catch (e) {
          throw asOurs(e);
        }
        if (problem !== null) throw new PermanentPublishError(`channel ${request.channel.name}: ${problem}`);
        try {
          return await publisher.publish(request);
        } catch (e) {
          throw asOurs(e);
        }
      },
      async lookup(request: PublishRequest): Promise<PublishResult | null> {
        const { publisher } = await load(request);
        if (publisher.lookup === undefined) throw new PermanentPublishError(`channel ${request.channel.name}: its module cannot look up what it published`);
        try {
          return await publisher.lookup(request);
        } catch (e) {
          throw asOurs(e);
        }
      },
      async close() {
        const all = [...loaded.values()];
        loaded.clear();
        await Promise.all(all.map(async (entry) => (await entry.catch(() => null))?.publisher.close().catch(() => undefined)));
      },
    };
  },
};

/** The user module of a module channel, loaded by the CLI (add, update, schedule): refused in one line as the worker would. */
export async function loadChannelModule(settings: Record<string, unknown>, moduleDir: string | null): Promise<UserModule> {
  const file = await resolveModulePath(parseSettings(settings).module_path, moduleDir);
  try {
    return await importUserModule(file);
  } catch (e) {
    throw new SettingsError(`module ${file} failed to load: ${e instanceof Error ? e.message : String(e)}`);
  }
}
