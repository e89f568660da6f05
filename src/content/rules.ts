import { loadPublisherModule } from '../publishers/registry.ts';
import type { PublisherModule } from '../publishers/publisher.ts';
import type { Channel } from '../types.ts';
import type { ContentRules } from './check.ts';

/** A platform module's content rules. */
export function rulesOf(module: PublisherModule): ContentRules {
  return {
    platform: module.platform,
    checkText: (text, settings, images) => module.checkText(text, settings, images),
    media: module.media ?? null,
    threads: module.threads === true,
  };
}

/**
 * What a channel takes: its platform module's rules, or for a `module` channel its user
 * module's (`checkText`, `media`, `threads`), loaded from inside MODULE_DIR only. Null
 * for a platform nobody knows. Throws SettingsError when a module channel's file may not
 * be loaded, and the module's own error when it fails to load.
 */
export async function rulesFor(channel: Channel, moduleDir: string | null): Promise<ContentRules | null> {
  const module = await loadPublisherModule(channel.platform);
  if (module === null) return null;
  if (channel.platform !== 'module') return rulesOf(module);
  const { module_path: modulePath } = module.parseSettings(channel.settings) as { module_path: string };
  // the user module's loader (node:fs/promises, node:url) only for a module channel
  const { importUserModule, resolveModulePath } = await import('../publishers/module.ts');
  const file = await resolveModulePath(modulePath, moduleDir);
  let user;
  try {
    user = await importUserModule(file);
  } catch (e) {
    // as the module publisher says it: may pass (the file may be fixed)
    throw new Error(`module ${file} failed to load: ${e instanceof Error ? e.message : String(e)}`);
  }
  return {
    platform: `module ${file}`,
    checkText: (text, settings, images) => user.checkText?.(text, settings, images) ?? null,
    media: user.media ?? null,
    threads: user.threads === true,
  };
}
