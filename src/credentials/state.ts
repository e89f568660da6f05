import type { Channel } from '../types.ts';
import type { Vault } from './vault.ts';

/** How a channel's credentials are stored, as `channels list` and `status` show it (never the values). */
export function credentialsState(channel: Channel, vault: Vault): string {
  if (channel.credentials === null) {
    const legacy = 'url' in channel.settings || 'secret' in channel.settings;
    return legacy ? 'plaintext in settings (run channels rekey)' : 'none';
  }
  if (channel.platform === 'webhook' && ('url' in channel.settings || 'secret' in channel.settings)) return 'partly plaintext in settings (run channels rekey)';
  const d = vault.describe(channel.credentials);
  if (d.kind === 'plaintext') return 'plaintext (--insecure-plaintext)';
  if (d.kind === 'unreadable') return 'unreadable';
  return d.keyId === vault.keyId ? `sealed (key ${d.keyId})` : `sealed with another key ${d.keyId} (run channels rekey)`;
}
