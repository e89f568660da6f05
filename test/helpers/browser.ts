import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { processTable } from './processes.ts';

/**
 * Debian's Chromium (`apt-get install -y chromium`) driven by playwright-core: a real
 * browser, headless, with a fresh profile per launch. `.ci/run` installs it and sets
 * REQUIRE_BROWSER=1, so CI fails without it; on a developer machine without it the
 * browser tests say in one line that they did not run.
 */
export const CHROMIUM = '/usr/bin/chromium';

/** Flags that work headless as root on these machines (../shared/TOOLCHAIN.md). */
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Every browser wait (launch, navigation, a locator) is bounded by this. */
export const BROWSER_TIMEOUT_MS = 20_000;

export function browserAvailable(what: string): boolean {
  if (fs.existsSync(CHROMIUM)) return true;
  assert.notEqual(process.env['REQUIRE_BROWSER'], '1', `REQUIRE_BROWSER=1 but ${CHROMIUM} is missing: apt-get install -y chromium`);
  process.stderr.write(`[test] ${what} did not run: ${CHROMIUM} is missing (apt-get install -y chromium, then npm test)\n`);
  return false;
}

export interface Browser {
  readonly context: BrowserContext;
  readonly page: Page;
  /** messages of dialogs the page opened (alert, confirm, prompt): each one is dismissed */
  readonly dialogs: string[];
  /** console errors and uncaught exceptions of the page (a CSP violation is one) */
  readonly errors: string[];
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<Browser> {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-chromium-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: FLAGS,
      timeout: BROWSER_TIMEOUT_MS,
      viewport: { width: 1400, height: 1000 },
    });
  } catch (e) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  context.setDefaultTimeout(BROWSER_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(BROWSER_TIMEOUT_MS);
  const page = context.pages()[0] ?? (await context.newPage());
  const dialogs: string[] = [];
  const errors: string[] = [];
  page.on('dialog', (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    void dialog.dismiss().catch(() => undefined);
  });
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  page.on('pageerror', (error) => errors.push(`uncaught: ${error.message}`));
  let closed = false;
  return {
    context,
    page,
    dialogs,
    errors,
    close: async () => {
      if (closed) return;
      closed = true;
      // bounded: a browser that has not closed in time is killed (its processes name the profile)
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, BROWSER_TIMEOUT_MS)));
      try {
        await Promise.race([context.close(), late]);
      } finally {
        clearTimeout(timer);
        for (const row of await processTable(profile)) {
          try {
            process.kill(row.pid, 'SIGKILL');
          } catch {
            // gone already
          }
        }
        fs.rmSync(profile, { recursive: true, force: true });
      }
    },
  };
}
