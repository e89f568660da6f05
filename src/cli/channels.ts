import path from 'node:path';
import type { Command } from 'commander';
import { loadPublisherModule, KNOWN_PLATFORMS } from '../publishers/registry.ts';
import { SettingsError } from '../publishers/publisher.ts';
import { loadChannelModule, resolveModulePath, userPolicy } from '../publishers/module.ts';
import { ON_UNKNOWN, PLATFORMS, type OnUnknown, type Platform } from '../types.ts';
import type { Config } from '../config.ts';
import { CliError, configFrom, operation, parsePositiveInt, print, withStore, type GlobalFlags } from './context.ts';
import { pauseChannel, removeChannel, resumeChannel, rotateWebhook } from '../operations/channels.ts';
import { credentialsState } from '../credentials/state.ts';
import { makeVault, parseKey } from '../credentials/vault.ts';
import { checkOneStdin, readSecretSource, secretFlag, SECRET_SOURCES } from './secrets.ts';
import { describeLimits, effectiveLimits, formatRateLimit, parseRateLimit, RATE_LIMIT_SETTING } from '../ratelimits/limits.ts';

interface AddFlags {
  name: string;
  platform: string;
  set?: string[];
  credentialsFrom?: string;
  insecurePlaintext?: boolean;
  verify?: boolean;
  path?: string;
  url?: string;
  urlFrom?: string;
  secret?: string;
  secretFrom?: string;
  onUnknown?: string;
  maxLength?: string;
  allowPrivateNetwork?: boolean;
  trust503?: boolean;
  module?: string;
  rateLimit?: string;
}

const RATE_LIMIT_HELP = "at most N posts in any WINDOW, across all workers (e.g. 20/60s, 300/3h); replaces the platform's documented posts limit";

/** --rate-limit N/WINDOW as the setting stored (its canonical text); null for `default` (the platform's own). */
function rateLimitFlag(value: string): string | null {
  if (value === 'default') return null;
  try {
    return formatRateLimit(parseRateLimit(value));
  } catch (e) {
    throw new CliError(`invalid --rate-limit: ${e instanceof Error ? e.message : String(e)}`);
  }
}

const ON_UNKNOWN_HELP = `what to do with a post whose outcome is unknown: ${ON_UNKNOWN.join(', ')} (default: the platform's safe one; see README)`;

function onUnknownFlag(value: string): OnUnknown {
  if (!(ON_UNKNOWN as readonly string[]).includes(value)) {
    throw new CliError(`invalid --on-unknown "${value}": use one of ${ON_UNKNOWN.join(', ')}`);
  }
  return value as OnUnknown;
}

/** A module channel's policy is its user module's: loaded (from inside MODULE_DIR only) to see it. */
async function policyOf(platform: string, settings: Record<string, unknown>, config: Config): Promise<{ defaultOnUnknown: OnUnknown; canLookUp: boolean } | null> {
  if (platform === 'module') {
    try {
      return userPolicy(await loadChannelModule(settings, config.moduleDir));
    } catch (e) {
      throw new CliError(e instanceof Error ? e.message : String(e));
    }
  }
  return loadPublisherModule(platform);
}

async function checkPolicy(platform: string, settings: Record<string, unknown>, config: Config, onUnknown: OnUnknown): Promise<void> {
  if (onUnknown !== 'check') return;
  const module = await policyOf(platform, settings, config);
  if (module !== null && !module.canLookUp) {
    throw new CliError(`--on-unknown check needs a platform that can look up what it published; ${platform} cannot (use retry or hold)`);
  }
}

const CHANNEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Platforms with flags of their own (--path, --url, --module); the networks take --set and --credentials-from. */
const LOCAL_PLATFORMS: readonly string[] = ['file', 'webhook', 'module'];

/**
 * `--set key=value`: a JSON value (true, 42, ["en"], "123" for digits that must stay
 * text, as a Facebook page id) or else the text as it is.
 */
function settingFlag(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function parseSets(sets: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const item of sets) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? '' : item.slice(0, eq);
    if (!/^[a-z][a-z0-9_]{0,63}$/.test(key)) throw new CliError(`--set takes key=value with a lower-case key (got "${item.slice(0, 40)}")`);
    const raw = item.slice(eq + 1);
    let value: unknown = raw;
    try {
      value = JSON.parse(raw) as unknown;
    } catch {
      // plain text
    }
    out[key] = value;
  }
  return out;
}

/** A channel's credentials as a JSON object from a secret source (never from argv). */
async function credentialsFrom(source: string): Promise<Record<string, unknown>> {
  const text = await readSecretSource('--credentials-from', source);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CliError('--credentials-from: not JSON (give an object such as {"access_token": "..."})');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CliError('--credentials-from: give a JSON object');
  return value as Record<string, unknown>;
}

/** One authenticated call with the network (channels add / update), as one line either way. */
async function verifyWith(platform: string, settings: Record<string, unknown>, credentials: Record<string, unknown> | null, config: Config): Promise<void> {
  const module = await loadPublisherModule(platform);
  if (module?.verify === undefined) return;
  try {
    const { account } = await module.verify(settings, credentials, {
      timeoutMs: config.publishTimeoutMs,
      concurrency: 1,
      allowPrivateNetwork: config.allowPrivateNetwork,
    });
    print(`Credentials accepted by ${platform} for ${account}`);
  } catch (e) {
    throw new CliError(`${platform} did not accept the credentials: ${e instanceof Error ? e.message : String(e)} (--no-verify skips this check)`);
  }
}

/** Checks credentials against the platform's schema and the network, and seals them (plain only when asked). */
async function sealChecked(
  platform: string,
  settings: Record<string, unknown>,
  credentials: Record<string, unknown>,
  config: Config,
  flags: { insecurePlaintext?: boolean; verify?: boolean },
): Promise<string> {
  const module = await loadPublisherModule(platform);
  if (module?.parseCredentials === undefined) throw new CliError(`platform ${platform} takes no credentials`);
  try {
    module.parseCredentials(credentials);
  } catch (e) {
    throw new CliError(e instanceof Error ? e.message : String(e));
  }
  const vault = makeVault(config.secretKey);
  if (vault.keyId === null && flags.insecurePlaintext !== true) {
    throw new CliError('POST_SCHEDULER_SECRET_KEY is not set: credentials are stored encrypted (set it, e.g. openssl rand -base64 32, or pass --insecure-plaintext)');
  }
  if (flags.verify !== false) await verifyWith(platform, settings, credentials, config);
  return vault.keyId === null ? vault.sealPlain(credentials) : vault.seal(credentials);
}

export { credentialsState } from '../credentials/state.ts';

export function registerChannels(program: Command, globals: () => GlobalFlags): void {
  const channels = program.command('channels').description('manage channels (where posts go)');

  channels
    .command('add')
    .description('add a channel: --platform file --path P, or --platform webhook --url U | --url-from SOURCE [--secret S | --secret-from SOURCE]')
    .requiredOption('--name <name>', 'channel name (letters, digits, . _ -)')
    .requiredOption('--platform <platform>', `one of: ${PLATFORMS.join(', ')}`)
    .option('--path <path>', 'file platform: the JSON-lines file to append to (stored absolute)')
    .option('--url <url>', 'webhook platform: the URL to POST to (a secret: prefer --url-from)')
    .option('--url-from <source>', `webhook platform: read the URL from ${SECRET_SOURCES}`)
    .option('--secret <secret>', 'webhook platform: HMAC-SHA256 signing secret (prefer --secret-from)')
    .option('--secret-from <source>', `webhook platform: read the signing secret from ${SECRET_SOURCES}`)
    .option('--max-length <n>', 'webhook platform: the longest text the receiving platform takes; longer posts are refused')
    .option('--allow-private-network', 'webhook platform: may connect to loopback, private and link-local addresses (off: SSRF protection)')
    .option('--trust-503', "webhook platform: this receiver's 503 means the request was not processed (off: a 503 may be an unknown outcome)")
    .option('--module <file>', 'module platform: your ES module (.js or .mjs) inside MODULE_DIR, stored as its absolute real path')
    .option('--on-unknown <policy>', ON_UNKNOWN_HELP)
    .option('--set <key=value>', "a platform setting (repeatable), e.g. --set instance=https://mastodon.social", settingFlag)
    .option('--credentials-from <source>', `the platform's credentials as a JSON object, from ${SECRET_SOURCES}`)
    .option('--insecure-plaintext', 'store credentials unencrypted when POST_SCHEDULER_SECRET_KEY is not set (not recommended)')
    .option('--no-verify', 'do not check the credentials with the network before adding the channel')
    .option('--rate-limit <N/WINDOW>', RATE_LIMIT_HELP)
    .action(async (flags: AddFlags) => {
      const config = configFrom(globals());
      const rateLimit = flags.rateLimit === undefined ? null : rateLimitFlag(flags.rateLimit);
      if (!CHANNEL_NAME.test(flags.name)) throw new CliError(`invalid channel name "${flags.name}": use 1-64 letters, digits, . _ -`);
      if (!(PLATFORMS as readonly string[]).includes(flags.platform)) {
        throw new CliError(`unknown platform "${flags.platform}": use one of ${KNOWN_PLATFORMS.join(', ')}`);
      }
      const platform = flags.platform as Platform;
      let settings: Record<string, unknown>;
      checkOneStdin([
        ['--credentials-from', flags.credentialsFrom],
        ['--url-from', flags.urlFrom],
        ['--secret-from', flags.secretFrom],
      ]);
      const webhookOnly: [string, unknown][] = [
        ['--url', flags.url ?? flags.urlFrom],
        ['--secret', flags.secret ?? flags.secretFrom],
        ['--max-length', flags.maxLength],
        ['--trust-503', flags.trust503],
      ];
      const misplaced = (platform === 'webhook' ? [] : webhookOnly).concat(platform === 'file' ? [] : [['--path', flags.path]])
        .concat(platform === 'module' ? [] : [['--module', flags.module]]).find(([, given]) => given !== undefined);
      if (misplaced !== undefined) throw new CliError(`${misplaced[0]} is not a setting of platform ${platform}`);
      if (flags.set !== undefined && LOCAL_PLATFORMS.includes(platform)) throw new CliError(`--set is for the networks' settings; platform ${platform} has flags of its own`);
      let credentials: Record<string, unknown> | null = flags.credentialsFrom === undefined ? null : await credentialsFrom(flags.credentialsFrom);
      if (!LOCAL_PLATFORMS.includes(platform)) {
        settings = { ...parseSets(flags.set ?? []), ...(flags.allowPrivateNetwork === true ? { allow_private_network: true } : {}) };
      } else if (platform === 'file') {
        // absolute, so a worker started in another directory writes the same file
        settings = flags.path === undefined ? {} : { path: path.resolve(flags.path) };
      } else if (platform === 'module') {
        // Loading code is a privilege: only a file inside the operator's MODULE_DIR, fixed
        // here as its real path (symlinks resolved). No HTTP API may ever create or change
        // a module channel: this command line is the only way in.
        if (flags.module === undefined) throw new CliError('platform module needs --module FILE (a .js or .mjs file inside MODULE_DIR)');
        try {
          settings = { module_path: await resolveModulePath(flags.module, config.moduleDir) };
        } catch (e) {
          throw new CliError(e instanceof Error ? e.message : String(e));
        }
      } else {
        const url = await secretFlag('url', flags.url, flags.urlFrom);
        const secret = await secretFlag('secret', flags.secret, flags.secretFrom);
        // the URL (tokens live in paths and queries) and the secret are credentials
        credentials = { ...credentials, ...(url === undefined ? {} : { url }), ...(secret === undefined ? {} : { secret }) };
        settings = {
          ...(flags.maxLength === undefined ? {} : { max_length: parsePositiveInt(flags.maxLength, '--max-length', 1_000_000) }),
          ...(flags.allowPrivateNetwork === true ? { allow_private_network: true } : {}),
          ...(flags.trust503 === true ? { trust_503: true } : {}),
        };
      }
      const module = await loadPublisherModule(platform);
      if (module === null) throw new CliError(`unknown platform "${platform}"`);
      try {
        if (!LOCAL_PLATFORMS.includes(platform)) {
          // what the platform's schema keeps is what is stored: a key it does not know
          // (a token given with --set, say) is refused, never kept in the shown settings
          const known = module.parseSettings(settings) as Record<string, unknown>;
          const unknownKey = Object.keys(settings).find((k) => !(k in known));
          if (unknownKey !== undefined) throw new CliError(`unknown setting "${unknownKey}" for platform ${platform} (credentials go in --credentials-from)`);
          settings = known;
        } else {
          module.parseSettings(platform === 'webhook' ? { ...settings, ...credentials } : settings);
        }
        if (credentials === null && module.parseCredentials !== undefined && !LOCAL_PLATFORMS.includes(platform)) {
          throw new CliError(`platform ${platform} needs credentials: --credentials-from ${SECRET_SOURCES}`);
        }
      } catch (e) {
        throw new CliError(e instanceof SettingsError || e instanceof CliError ? e.message : String(e));
      }
      // the platforms' schemas do not know it: added once they have checked the rest
      if (rateLimit !== null) settings = { ...settings, [RATE_LIMIT_SETTING]: rateLimit };
      const policy = (await policyOf(platform, settings, config)) ?? module;
      const onUnknown = flags.onUnknown === undefined ? policy.defaultOnUnknown : onUnknownFlag(flags.onUnknown);
      await checkPolicy(platform, settings, config, onUnknown);
      const sealed = credentials === null ? null : await sealChecked(platform, settings, credentials, config, flags);
      if (credentials === null && module.verify !== undefined && flags.verify !== false) await verifyWith(platform, settings, null, config);
      await withStore(config, async (store) => {
        if ((await store.findChannel(flags.name)) !== null) throw new CliError(`a channel named "${flags.name}" already exists`);
        const channel = await store.addChannel({ name: flags.name, platform, settings, onUnknown, credentials: sealed });
        print(`Added channel ${channel.name} (${channel.platform}, on unknown outcome: ${channel.onUnknown}), id ${channel.id}`);
      });
    });

  channels
    .command('update')
    .description("change a channel's unknown-outcome policy, disable / enable it, or give it new credentials")
    .requiredOption('--name <name>', 'the channel')
    .option('--on-unknown <policy>', ON_UNKNOWN_HELP)
    .option('--disable', 'its due posts fail with "channel disabled" until enabled again')
    .option('--enable', 'publish its posts again')
    .option('--credentials-from <source>', `new credentials (a JSON object) from ${SECRET_SOURCES}: checked with the network, sealed; clears "needs attention"`)
    .option('--insecure-plaintext', 'store them unencrypted when POST_SCHEDULER_SECRET_KEY is not set')
    .option('--no-verify', 'do not check the credentials with the network')
    .option('--rate-limit <N/WINDOW>', `${RATE_LIMIT_HELP}; "default" for the platform's own`)
    .option('--url-from <source>', `webhook: a new URL (rotation), from ${SECRET_SOURCES}`)
    .option('--secret-from <source>', `webhook: a new signing secret (rotation), from ${SECRET_SOURCES}`)
    .option('--url <url>', 'refused: a secret on the command line (use --url-from)')
    .option('--secret <secret>', 'refused: a secret on the command line (use --secret-from)')
    .action(
      async (flags: {
        url?: string;
        urlFrom?: string;
        secret?: string;
        secretFrom?: string;
        name: string;
        onUnknown?: string;
        disable?: boolean;
        enable?: boolean;
        credentialsFrom?: string;
        insecurePlaintext?: boolean;
        verify?: boolean;
        rateLimit?: string;
      }) => {
        const config = configFrom(globals());
        if (flags.disable === true && flags.enable === true) throw new CliError('give --disable or --enable, not both');
        const onUnknown = flags.onUnknown === undefined ? undefined : onUnknownFlag(flags.onUnknown);
        const enabled = flags.disable === true ? false : flags.enable === true ? true : undefined;
        const rateLimit = flags.rateLimit === undefined ? undefined : rateLimitFlag(flags.rateLimit);
        // never a secret on argv (ps, shell history): only the -from forms
        if (flags.url !== undefined) throw new CliError('--url puts the URL on the command line: use --url-from env:NAME, file:PATH or stdin');
        if (flags.secret !== undefined) throw new CliError('--secret puts the secret on the command line: use --secret-from env:NAME, file:PATH or stdin');
        const rotating = flags.urlFrom !== undefined || flags.secretFrom !== undefined;
        if (onUnknown === undefined && enabled === undefined && flags.credentialsFrom === undefined && rateLimit === undefined && !rotating) {
          throw new CliError('nothing to change: give --on-unknown, --disable, --enable, --credentials-from, --url-from, --secret-from or --rate-limit');
        }
        checkOneStdin([
          ['--credentials-from', flags.credentialsFrom],
          ['--url-from', flags.urlFrom],
          ['--secret-from', flags.secretFrom],
        ]);
        const fresh = flags.credentialsFrom === undefined ? null : await credentialsFrom(flags.credentialsFrom);
        const newUrl = flags.urlFrom === undefined ? undefined : await readSecretSource('--url-from', flags.urlFrom);
        const newSecret = flags.secretFrom === undefined ? undefined : await readSecretSource('--secret-from', flags.secretFrom);
        await withStore(config, async (store) => {
          const existing = await store.findChannel(flags.name);
          if (existing === null) throw new CliError(`no channel named "${flags.name}" (see: post-scheduler channels list)`);
          if (rotating) {
            if (existing.platform !== 'webhook') throw new CliError(`--url-from and --secret-from are for webhook channels; ${existing.name} is ${existing.platform} (use --credentials-from)`);
            await operation(() => rotateWebhook(store, existing, { url: newUrl, secret: newSecret }, config.secretKey, { insecurePlaintext: flags.insecurePlaintext === true }));
            const what = [newUrl !== undefined && 'URL', newSecret !== undefined && 'secret'].filter((w) => w !== false).join(' and ');
            print(`Channel ${existing.name}: new ${what} stored`);
          }
          if (onUnknown !== undefined) await checkPolicy(existing.platform, existing.settings, config, onUnknown);
          if (fresh !== null) {
            const sealed = await sealChecked(existing.platform, existing.settings, fresh, config, flags);
            await store.saveCredentials(existing.id, sealed);
            print(`Channel ${existing.name}: new credentials stored`);
          }
          if (rateLimit !== undefined) {
            const rest = Object.fromEntries(Object.entries(existing.settings).filter(([key]) => key !== RATE_LIMIT_SETTING));
            const next = rateLimit === null ? rest : { ...rest, [RATE_LIMIT_SETTING]: rateLimit };
            await store.replaceSettings(existing.id, next);
            print(`Channel ${existing.name}: rate limit ${describeLimits(effectiveLimits({ settings: next }, await loadPublisherModule(existing.platform)))}`);
          }
          if (onUnknown === undefined && enabled === undefined) return;
          const channel = await store.updateChannel(flags.name, { ...(onUnknown === undefined ? {} : { onUnknown }), ...(enabled === undefined ? {} : { enabled }) });
          if (channel === null) throw new CliError(`no channel named "${flags.name}"`);
          print(`Channel ${channel.name}: on unknown outcome ${channel.onUnknown}, ${channel.enabled ? 'enabled' : 'disabled'}`);
        });
      },
    );

  channels
    .command('pause')
    .description("pause a channel: its posts wait (pending, attempts untouched) until resume; scheduling on it still works, with a warning")
    .argument('<name>', 'the channel')
    .action(async (name: string) => {
      const config = configFrom(globals());
      await withStore(config, async (store) => {
        await operation(() => pauseChannel(store, name));
        print(`Paused channel ${name}: its posts wait until \`post-scheduler channels resume ${name}\``);
      });
    });

  channels
    .command('resume')
    .description("lift an operator's pause (a network's rate pause still runs its course)")
    .argument('<name>', 'the channel')
    .action(async (name: string) => {
      const config = configFrom(globals());
      await withStore(config, async (store) => {
        await operation(() => resumeChannel(store, name));
        print(`Resumed channel ${name}`);
      });
    });

  channels
    .command('remove')
    .description('remove a channel; refused while it has pending, processing or unknown posts (its published history stays)')
    .argument('<name>', 'the channel')
    .option('--cancel-posts', 'cancel its pending and unknown posts with it (processing ones still refuse: wait for them)')
    .action(async (name: string, flags: { cancelPosts?: boolean }) => {
      const config = configFrom(globals());
      await withStore(config, async (store) => {
        const result = await operation(() => removeChannel(store, name, flags.cancelPosts === true));
        print(`Removed channel ${name}${result.cancelled > 0 ? ` (cancelled ${result.cancelled} posts)` : ''}`);
      });
    });

  channels
    .command('list')
    .description('list channels (secrets hidden)')
    .option('--json', 'one JSON array')
    .action(async (flags: { json?: boolean }) => {
      const config = configFrom(globals());
      const vault = makeVault(config.secretKey);
      await withStore(config, async (store) => {
        const list = await store.listChannels();
        const shown = await Promise.all(
          list.map(async (c) => {
            const module = await loadPublisherModule(c.platform);
            let rateLimits: string;
            try {
              rateLimits = describeLimits(effectiveLimits(c, module));
            } catch (e) {
              rateLimits = `unreadable: ${e instanceof Error ? e.message : String(e)}`;
            }
            // never the credentials, sealed or not: only how they are stored
            return {
              ...c,
              settings: module === null ? {} : module.redactSettings(c.settings),
              credentials: credentialsState(c, vault),
              rateLimits,
              paused: c.pausedAt != null,
            };
          }),
        );
        if (flags.json === true) {
          print(JSON.stringify(shown, null, 2));
          return;
        }
        if (shown.length === 0) {
          print('No channels. Add one: post-scheduler channels add --name demo --platform file --path ./data/published.jsonl');
          return;
        }
        print(`${'id'.padEnd(5)}${'name'.padEnd(20)}${'platform'.padEnd(10)}${'enabled'.padEnd(9)}${'unknown'.padEnd(9)}${'credentials'.padEnd(22)}${'rate limit'.padEnd(36)}settings`);
        for (const c of shown) {
          print(
            `${String(c.id).padEnd(5)}${c.name.padEnd(20)}${c.platform.padEnd(10)}${(c.paused ? 'paused' : c.enabled ? 'yes' : 'no').padEnd(9)}${c.onUnknown.padEnd(9)}${c.credentials.padEnd(22)}${c.rateLimits.padEnd(36)}${JSON.stringify(c.settings)}`,
          );
        }
      });
    });

  channels
    .command('rekey')
    .description('seal every channel\'s credentials with POST_SCHEDULER_SECRET_KEY: after rotating the key, or to encrypt plaintext ones')
    .option('--old-key-from <source>', `the previous key (to open credentials sealed with it), from ${SECRET_SOURCES}`)
    .action(async (flags: { oldKeyFrom?: string }) => {
      const config = configFrom(globals());
      if (config.secretKey === null) throw new CliError('POST_SCHEDULER_SECRET_KEY is not set: there is no key to seal with');
      let oldKeys: Buffer[] = config.oldSecretKey === null ? [] : [config.oldSecretKey];
      if (flags.oldKeyFrom !== undefined) {
        try {
          const old = parseKey(await readSecretSource('--old-key-from', flags.oldKeyFrom), 'the old key');
          oldKeys = old === null ? [] : [old];
        } catch (e) {
          throw new CliError(e instanceof Error ? e.message : String(e));
        }
      }
      const vault = makeVault(config.secretKey, oldKeys);
      await withStore(config, async (store) => {
        let resealed = 0;
        let current = 0;
        const failed: string[] = [];
        for (const channel of await store.listChannels()) {
          // webhook channels from before sealed credentials keep url and secret in settings
          // (also one whose earlier rekey stopped between its two writes)
          const legacy = channel.platform === 'webhook' && ('url' in channel.settings || 'secret' in channel.settings);
          if (channel.credentials === null && !legacy) continue;
          const d = channel.credentials === null ? null : vault.describe(channel.credentials);
          if (d?.kind === 'sealed' && d.keyId === vault.keyId && !legacy) {
            current++;
            continue;
          }
          try {
            const credentials: Record<string, unknown> = channel.credentials === null ? {} : vault.open(channel.credentials);
            const { url, secret, ...rest } = channel.settings;
            if (legacy) {
              credentials['url'] ??= url;
              if (secret !== undefined) credentials['secret'] ??= secret;
            }
            // sealed first: the settings lose the URL only once the credentials hold it
            await store.saveCredentials(channel.id, vault.seal(credentials));
            if (legacy) await store.replaceSettings(channel.id, rest);
            resealed++;
          } catch (e) {
            failed.push(`${channel.name}: ${e instanceof Error ? e.message : String(e)}`);
          }
        }
        print(`Sealed the credentials of ${resealed} channels with key ${vault.keyId ?? ''}; ${current} already were`);
        if (failed.length > 0) throw new CliError(`could not open the credentials of ${failed.length} channels (${failed.join('; ')}): give the key that sealed them with --old-key-from`);
      });
    });
}
