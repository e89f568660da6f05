import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import type { Locator, Page } from 'playwright-core';
import { browserAvailable, launchBrowser, type Browser } from './helpers/browser.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { killAll, ROOT, run, start, testEnv, waitFor, type Running } from './helpers/processes.ts';
import { startReceiver, type Receiver } from './helpers/receiver.ts';

/**
 * The dashboard at / in Debian's Chromium, against `serve` on a SQLite file and real
 * cycles (`cron`) publishing to a local webhook receiver: what an operator sees and
 * clicks. The screenshot it keeps: test-artifacts/dashboard.png.
 */
const TOKEN = 'dashboard-test-token-0123456789';
const SCRIPT_POST = '<script>alert(1)</script>';
const IMG_POST = '<img src=x onerror=alert(2)>';
const SCREENSHOT = path.join(ROOT, 'test-artifacts', 'dashboard.png');

async function serve(env: NodeJS.ProcessEnv): Promise<{ proc: Running; url: string }> {
  const proc = start(['serve', '--port', '0'], env, 300_000);
  let url = '';
  await waitFor('serve prints its address', () => {
    url = /Listening on (http:\/\/\S+)/.exec(proc.output())?.[1] ?? '';
    return url !== '';
  });
  return { proc, url };
}

/** Polls what a person reads on the page until it is `want` (bounded). */
async function seeText(locator: Locator, want: string, what: string): Promise<void> {
  let last: string | null = null;
  try {
    await waitFor(what, async () => {
      last = (await locator.textContent({ timeout: 1_000 }).catch(() => null))?.trim() ?? null;
      return last === want;
    });
  } catch {
    const shown = await locator.page().locator('#error').textContent().catch(() => null);
    assert.fail(`${what}: the page shows ${JSON.stringify(last)}, not ${JSON.stringify(want)}${shown ? ` (its error line: ${shown})` : ''}`);
  }
}

const count = (page: Page, state: string) => page.locator(`#count-${state}`);
const attentionRow = (page: Page, id: number) => page.locator(`#attention tr[data-post-id="${id}"]`);

describe('the dashboard in a browser', () => {
  let db: TestDatabase | undefined;
  let receiver: Receiver | undefined;
  let server: Running | undefined;
  let url = '';
  const browsers: Browser[] = [];
  /** what the second test starts for itself */
  const own: { dbs: TestDatabase[]; servers: Running[] } = { dbs: [], servers: [] };
  after(async () => {
    for (const b of browsers) await b.close();
    for (const s of [server, ...own.servers]) {
      if (s === undefined) continue;
      s.child.kill('SIGTERM');
      await Promise.race([s.done, new Promise((r) => setTimeout(r, 10_000).unref())]);
    }
    killAll();
    await receiver?.close();
    await db?.drop();
    for (const d of own.dbs) await d.drop();
  });

  it('shows the counts, the week ahead, failed posts with Retry, the cycles; post text stays text', async () => {
    if (!browserAvailable('the dashboard browser test')) return;
    db = await createTestDatabase('sqlite');
    const env = testEnv(db.url, { API_TOKEN: TOKEN });
    // refuses two posts for good (400: they fail) until told otherwise
    let refuse = true;
    const refused = new Set([SCRIPT_POST, 'hello two']);
    receiver = await startReceiver((d) => (refuse && refused.has(d.text) ? { status: 400, body: '{"error":"refused by the test"}' } : { status: 200 }));
    let r = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', receiver.url], env);
    assert.equal(r.code, 0, r.stderr);
    const ids: Record<string, number> = {};
    for (const [text, at] of [['hello one', 'now'], ['hello two', 'now'], [SCRIPT_POST, 'now'], ['in two minutes', '+2m'], [IMG_POST, '+1d']] as const) {
      r = await run(['schedule', '--channel', 'hook', '--text', text, '--at', at], env);
      assert.equal(r.code, 0, r.stderr);
      ids[text] = Number(/\d+/.exec(r.stdout)?.[0]);
    }
    const scriptId = ids[SCRIPT_POST] ?? 0;
    const twoId = ids['hello two'] ?? 0;
    ({ proc: server, url } = await serve(env));

    const browser = await launchBrowser();
    browsers.push(browser);
    const { page } = browser;
    const response = await page.goto(`${url}/#token=${TOKEN}`);
    assert.equal(response?.status(), 200);
    assert.match((await response?.allHeaders())?.['content-security-policy'] ?? '', /script-src 'self'/);

    // the counts before any cycle
    await seeText(count(page, 'duePending'), '3', 'due now before the cycle');
    await seeText(count(page, 'scheduledLater'), '2', 'scheduled later');
    await seeText(count(page, 'published'), '0', 'published before the cycle');
    assert.ok(!page.url().includes(TOKEN), `the token is taken out of the address bar: ${page.url()}`);

    // the week ahead: both later posts, the markup one as text
    const calendar = page.locator('#calendar');
    await waitFor('the week ahead lists the later posts', async () => (await calendar.locator('li').count()) === 2);
    const calendarText = await calendar.innerText();
    assert.ok(calendarText.includes('in two minutes'), calendarText);
    assert.ok(calendarText.includes(IMG_POST), `the <img> post shows as text: ${calendarText}`);
    assert.equal(await calendar.locator('img').count(), 0, 'no <img> element was made from a post');
    assert.ok(calendarText.includes('hook (1)'), `posts are grouped by channel: ${calendarText}`);

    // a real cycle: one published, two failed (the script-tag post among them)
    r = await run(['cron'], env, 120_000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await page.click('#refresh');
    await seeText(count(page, 'published'), '1', 'published after the cycle');
    await seeText(count(page, 'failed'), '2', 'failed after the cycle');
    await seeText(count(page, 'duePending'), '0', 'due after the cycle');
    const row = attentionRow(page, scriptId);
    await seeText(row.locator('td.status'), 'failed', 'the failed post is listed');
    assert.equal(await row.locator('td.text').textContent(), SCRIPT_POST, 'the script-tag post shows as its text');
    assert.equal(await page.locator('main script').count(), 0, 'no <script> element was made from a post');
    assert.match((await row.locator('td.last-error').textContent()) ?? '', /400/);
    const cycles = page.locator('#cycles tbody tr');
    await waitFor('the cycle is listed', async () => (await cycles.count()) === 1);
    const cycleText = await cycles.first().innerText();
    assert.match(cycleText, /1 published, 0 retried, 2 failed/, cycleText);
    assert.match(cycleText, /exit 0/, cycleText);
    assert.equal(await page.locator('#chart canvas').count() > 0, true, 'the activity chart is drawn');

    // someone else retried "hello two" meanwhile: the page's Retry gets 409, and says so in the row
    r = await run(['retry', String(twoId)], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const twoRow = attentionRow(page, twoId);
    await twoRow.locator('button[data-action="retry"]').click();
    await waitFor('the refusal is shown in the row', async () => /Retry refused: .*pending/.test((await twoRow.locator('.note.error').textContent({ timeout: 1_000 }).catch(() => null)) ?? ''));
    await page.click('#refresh');
    await seeText(twoRow.locator('td.status'), 'pending', 'the refused row shows where the post is now');

    // Retry: the receiver takes them now; the row says pending, the next cycle publishes it
    refuse = false;
    await row.locator('button[data-action="retry"]').click();
    await seeText(row.locator('td.status'), 'pending', 'the row after Retry');
    await seeText(count(page, 'failed'), '0', 'failed after Retry');
    r = await run(['cron'], env, 120_000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await page.click('#refresh');
    await seeText(row.locator('td.status'), 'published', 'the retried post after the next cycle');
    await seeText(count(page, 'published'), '3', 'published after the next cycle');
    assert.equal(receiver.accepted.get(scriptId), 1, 'the receiver took the retried post once');
    await waitFor('both cycles are listed', async () => (await cycles.count()) === 2);

    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    process.stdout.write(`[test] dashboard screenshot: ${path.relative(ROOT, SCREENSHOT)}\n`);

    assert.deepEqual(browser.dialogs, [], 'no dialog opened (no post text ran as script)');
    // the one refused request above is the only console error (a CSP violation would be one)
    const unexpected = browser.errors.filter((e) => !/status of 409/.test(e));
    assert.deepEqual(unexpected, [], 'no other console errors');
  });

  it('asks for the token when none is given, and again after a wrong one', async () => {
    if (!browserAvailable('the dashboard browser test')) return;
    // its own database and server: it does not depend on the first test
    const ownDb = await createTestDatabase('sqlite');
    own.dbs.push(ownDb);
    const env = testEnv(ownDb.url, { API_TOKEN: TOKEN });
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    const r = await run(['channels', 'add', '--name', 'later', '--platform', 'file', '--path', path.join(path.dirname(SCREENSHOT), 'login-test.jsonl')], env);
    assert.equal(r.code, 0, r.stderr);
    for (const text of ['one', 'two', 'three']) {
      const s = await run(['schedule', '--channel', 'later', '--text', text, '--at', '+1d'], env);
      assert.equal(s.code, 0, s.stderr);
    }
    const started = await serve(env);
    own.servers.push(started.proc);
    const browser = await launchBrowser();
    browsers.push(browser);
    const { page } = browser;
    await page.goto(`${started.url}/`);
    await page.locator('#login').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#main').isVisible(), false, 'nothing is shown without the token');
    await page.fill('#token-input', 'wrong-token-0123456789');
    await page.click('#login button[type="submit"]');
    await waitFor('the wrong token is refused', async () => /refused/.test((await page.locator('#login-reason').textContent()) ?? ''));
    await page.locator('#login').waitFor({ state: 'visible' });
    await page.fill('#token-input', TOKEN);
    await page.click('#login button[type="submit"]');
    await seeText(count(page, 'scheduledLater'), '3', 'the counts with the right token');
    assert.equal(await page.locator('#login').isVisible(), false);
    assert.deepEqual(browser.dialogs, []);
  });
});

