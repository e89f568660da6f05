import path from 'node:path';
import type { Command } from 'commander';
import { loadPublisherModule, KNOWN_PLATFORMS } from '../publishers/registry.ts';
import { SettingsError } from '../publishers/publisher.ts';
import { ON_UNKNOWN, PLATFORMS, type OnUnknown, type Platform } from '../types.ts';
import { CliError, configFrom, parsePositiveInt, print, withStore, type GlobalFlags } from './context.ts';
import { checkOneStdin, secretFlag, SECRET_SOURCES } from './secrets.ts';

interface AddFlags {
  name: string;
  platform: string;
  path?: string;
  url?: string;
  urlFrom?: string;
  secret?: string;
  secretFrom?: string;
  onUnknown?: string;
  maxLength?: string;
  allowPrivateNetwork?: boolean;
  trust503?: boolean;
}

const ON_UNKNOWN_HELP = `what to do with a post whose outcome is unknown: ${ON_UNKNOWN.join(', ')} (default: the platform's safe one; see README)`;

function onUnknownFlag(value: string): OnUnknown {
  if (!(ON_UNKNOWN as readonly string[]).includes(value)) {
    throw new CliError(`invalid --on-unknown "${value}": use one of ${ON_UNKNOWN.join(', ')}`);
  }
  return value as OnUnknown;
}

async function checkPolicy(platform: string, onUnknown: OnUnknown): Promise<void> {
  const module = await loadPublisherModule(platform);
  if (onUnknown === 'check' && module !== null && !module.canLookUp) {
    throw new CliError(`--on-unknown check needs a platform that can look up what it published; ${platform} cannot (use retry or hold)`);
  }
}

const CHANNEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

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
    .option('--on-unknown <policy>', ON_UNKNOWN_HELP)
    .action(async (flags: AddFlags) => {
      const config = configFrom(globals());
      if (!CHANNEL_NAME.test(flags.name)) throw new CliError(`invalid channel name "${flags.name}": use 1-64 letters, digits, . _ -`);
      if (!(PLATFORMS as readonly string[]).includes(flags.platform)) {
        throw new CliError(`unknown platform "${flags.platform}": use one of ${KNOWN_PLATFORMS.join(', ')}`);
      }
      const platform = flags.platform as Platform;
      let settings: Record<string, unknown>;
      if (platform === 'file') {
        // absolute, so a worker started in another directory writes the same file
        settings = flags.path === undefined ? {} : { path: path.resolve(flags.path) };
      } else {
        checkOneStdin([
          ['--url-from', flags.urlFrom],
          ['--secret-from', flags.secretFrom],
        ]);
        const url = await secretFlag('url', flags.url, flags.urlFrom);
        const secret = await secretFlag('secret', flags.secret, flags.secretFrom);
        settings = {
          ...(url === undefined ? {} : { url }),
          ...(secret === undefined ? {} : { secret }),
          ...(flags.maxLength === undefined ? {} : { max_length: parsePositiveInt(flags.maxLength, '--max-length', 1_000_000) }),
          ...(flags.allowPrivateNetwork === true ? { allow_private_network: true } : {}),
          ...(flags.trust503 === true ? { trust_503: true } : {}),
        };
      }
      const module = await loadPublisherModule(platform);
      if (module === null) throw new CliError(`unknown platform "${platform}"`);
      try {
        module.parseSettings(settings);
      } catch (e) {
        throw new CliError(e instanceof SettingsError ? e.message : String(e));
      }
      const onUnknown = flags.onUnknown === undefined ? module.defaultOnUnknown : onUnknownFlag(flags.onUnknown);
      await checkPolicy(platform, onUnknown);
      await withStore(config, async (store) => {
        if ((await store.findChannel(flags.name)) !== null) throw new CliError(`a channel named "${flags.name}" already exists`);
        const channel = await store.addChannel({ name: flags.name, platform, settings, onUnknown });
        print(`Added channel ${channel.name} (${channel.platform}, on unknown outcome: ${channel.onUnknown}), id ${channel.id}`);
      });
    });

  channels
    .command('update')
    .description("change a channel's unknown-outcome policy, or disable / enable it")
    .requiredOption('--name <name>', 'the channel')
    .option('--on-unknown <policy>', ON_UNKNOWN_HELP)
    .option('--disable', 'its due posts fail with "channel disabled" until enabled again')
    .option('--enable', 'publish its posts again')
    .action(async (flags: { name: string; onUnknown?: string; disable?: boolean; enable?: boolean }) => {
      const config = configFrom(globals());
      if (flags.disable === true && flags.enable === true) throw new CliError('give --disable or --enable, not both');
      const onUnknown = flags.onUnknown === undefined ? undefined : onUnknownFlag(flags.onUnknown);
      const enabled = flags.disable === true ? false : flags.enable === true ? true : undefined;
      if (onUnknown === undefined && enabled === undefined) throw new CliError('nothing to change: give --on-unknown, --disable or --enable');
      await withStore(config, async (store) => {
        const existing = await store.findChannel(flags.name);
        if (existing === null) throw new CliError(`no channel named "${flags.name}" (see: post-scheduler channels list)`);
        if (onUnknown !== undefined) await checkPolicy(existing.platform, onUnknown);
        const channel = await store.updateChannel(flags.name, { ...(onUnknown === undefined ? {} : { onUnknown }), ...(enabled === undefined ? {} : { enabled }) });
        if (channel === null) throw new CliError(`no channel named "${flags.name}"`);
        print(`Channel ${channel.name}: on unknown outcome ${channel.onUnknown}, ${channel.enabled ? 'enabled' : 'disabled'}`);
      });
    });

  channels
    .command('list')
    .description('list channels (secrets hidden)')
    .option('--json', 'one JSON array')
    .action(async (flags: { json?: boolean }) => {
      const config = configFrom(globals());
      await withStore(config, async (store) => {
        const list = await store.listChannels();
        const shown = await Promise.all(
          list.map(async (c) => {
            const module = await loadPublisherModule(c.platform);
            return { ...c, settings: module === null ? {} : module.redactSettings(c.settings) };
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
        print(`${'id'.padEnd(5)}${'name'.padEnd(20)}${'platform'.padEnd(10)}${'enabled'.padEnd(9)}${'unknown'.padEnd(9)}settings`);
        for (const c of shown) {
          print(
            `${String(c.id).padEnd(5)}${c.name.padEnd(20)}${c.platform.padEnd(10)}${(c.enabled ? 'yes' : 'no').padEnd(9)}${c.onUnknown.padEnd(9)}${JSON.stringify(c.settings)}`,
          );
        }
      });
    });
}
