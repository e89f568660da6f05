import assert from 'node:assert/strict';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { startMastodon, TOKEN as MASTODON_TOKEN } from './helpers/fake-mastodon.ts';
import { APP_PASSWORD, HANDLE, startPds } from './helpers/fake-pds.ts';
import { BOT_TOKEN, CHANNEL, startTelegram } from './helpers/fake-telegram.ts';
import { startDiscord, WEBHOOK_TOKEN } from './helpers/fake-discord.ts';
import { GENERAL, startSlack, TOKEN as SLACK_TOKEN } from './helpers/fake-slack.ts';
import { CLIENT_ID, startX } from './helpers/fake-x.ts';
import { MEMBER, startLinkedIn, TOKEN as LINKEDIN_TOKEN } from './helpers/fake-linkedin.ts';
import { graphError, PAGE_ID, startFacebook, TOKEN as FACEBOOK_TOKEN } from './helpers/fake-facebook.ts';
import { startReceiver, type Answer } from './helpers/receiver.ts';
import { killAll, run, TEST_SECRET_KEY, testEnv } from './helpers/processes.ts';

/**
 * Secrets never appear in logs, errors, `channels list`, `status` or the database's
 * plaintext columns. Known secrets are planted in a channel of every platform that takes
 * credentials (the `file` and `module` platforms take none): access and refresh tokens,
 * an app password, bot tokens, a webhook URL with tokens in its path and query, an HMAC
 * secret, an OAuth client secret, and wrong credentials an `add` is refused with. A
 * full cycle runs with real processes: a success, answers that echo the secrets back
 * (a 500, a 400, a refusal of the credentials), the operator's `status`, `retry` and
 * `channels update`, token refreshes (X; Bluesky's access token, then its refresh token
 * too), and a `rekey`. Every planted secret, and its base64 and URL-encoded forms, is
 * then looked for in every output, every log line and every readable column.
 */

/** a secret as distinctive as the platform lets it be: short ones slip past the redaction of long opaque strings */
const planted = (what: string) => `SECRET-${what}-${randomBytes(3).toString('hex')}`;

type Failure = 'server-error' | 'bad-request' | 'credentials-refused';

interface Adapter {
  /** the channel's name (its platform's) */
  readonly name: string;
  /** `channels add` flags besides name, platform and credentials */
  readonly flags: readonly string[];
  /** the credentials the network takes now (JSON); null: given by flags (webhook) */
  credentials(): Record<string, unknown> | null;
  /** credentials the network refuses, themselves planted secrets; null: nothing to verify against */
  readonly wrong: Record<string, unknown> | null;
  /** every secret this channel has held or been handed */
  secrets(): string[];
  /** posts the network has received */
  published(): number;
  /** makes the network answer the next publish with this failure, its body echoing the secrets; false: not applicable */
  fail(failure: Failure): boolean;
  /** environment the flags read (the webhook's URL and secret) */
  readonly env?: Record<string, string>;
  /** the network's tokens expire: the access token, or the refresh token too */
  expire?(which: 'access' | 'refresh'): void;
  /** how often the channel got new tokens: refreshed, or signed in again */
  renewals?(): { refreshed: number; signedIn: number };
  close(): Promise<void>;
}

/** An error body that echoes secrets as APIs sometimes do: bare, after a scheme, as a key's value. */
const echo = (secrets: readonly string[]) =>
  // bare first: an error keeps only the beginning of a body
  `${secrets.join(' ')} | ${secrets.map((s) => `Authorization: Bearer ${s}; access_token=${s}`).join(' | ')}`;

const statusOf: Record<Failure, number> = { 'server-error': 500, 'bad-request': 400, 'credentials-refused': 401 };

async function startAdapters(): Promise<Adapter[]> {
  const adapters: Adapter[] = [];

  const masto = await startMastodon();
  adapters.push({
    name: 'mastodon',
    flags: ['--set', `instance=${masto.url}`],
    credentials: () => ({ access_token: MASTODON_TOKEN }),
    wrong: { access_token: planted('mastodon-wrong') },
    secrets: () => [MASTODON_TOKEN],
    published: () => masto.statuses.length,
    fail: (f) => {
      masto.overrides.push({ kind: 'answer', status: statusOf[f], body: JSON.stringify({ error: echo([MASTODON_TOKEN]) }) });
      return true;
    },
    close: () => masto.close(),
  });

  const pds = await startPds();
  adapters.push({
    name: 'bluesky',
    flags: ['--set', `service=${pds.url}`],
    credentials: () => ({ identifier: HANDLE, app_password: APP_PASSWORD }),
    wrong: { identifier: HANDLE, app_password: planted('bsky-wrong') },
    secrets: () => [APP_PASSWORD, ...pds.issued],
    published: () => pds.records.size,
    expire: (which) => {
      pds.expireAccessTokens();
      if (which === 'refresh') pds.expireRefreshTokens();
    },
    renewals: () => ({ refreshed: pds.count('com.atproto.server.refreshSession'), signedIn: pds.count('com.atproto.server.createSession') }),
    fail: (f) => {
      // an app password the PDS refuses cannot be planted in this fake: the refreshes below cover its sessions
      if (f === 'credentials-refused') return false;
      const status = statusOf[f];
      pds.createFaults.push({ kind: 'status', status, body: { error: status === 500 ? 'InternalServerError' : 'InvalidRequest', message: echo([APP_PASSWORD, ...pds.issued.slice(-2)]) } });
      return true;
    },
    close: () => pds.close(),
  });

  const telegram = await startTelegram();
  adapters.push({
    name: 'telegram',
    flags: ['--set', `api_url=${telegram.url}`, '--set', `chat_id=${CHANNEL}`],
    credentials: () => ({ bot_token: BOT_TOKEN }),
    wrong: { bot_token: `7001234567:${planted('telegram_wrong').replace(/-/g, '_')}` },
    secrets: () => [BOT_TOKEN],
    published: () => telegram.messages.length,
    fail: (f) => {
      const status = statusOf[f];
      telegram.overrides.push({ kind: 'answer', status, body: JSON.stringify({ ok: false, error_code: status, description: echo([BOT_TOKEN]) }) });
      return true;
    },
    close: () => telegram.close(),
  });

  const discord = await startDiscord();
  adapters.push({
    name: 'discord',
    flags: [],
    credentials: () => ({ webhook_url: discord.webhookUrl }),
    wrong: { webhook_url: discord.webhookUrl.replace(WEBHOOK_TOKEN, planted('discord_wrong')) },
    secrets: () => [WEBHOOK_TOKEN],
    published: () => discord.messages.length,
    fail: (f) => {
      const code = f === 'credentials-refused' ? 50027 : f === 'bad-request' ? 50035 : 0;
      discord.overrides.push({ kind: 'answer', status: statusOf[f], body: JSON.stringify({ message: echo([WEBHOOK_TOKEN, discord.webhookUrl]), code }) });
      return true;
    },
    close: () => discord.close(),
  });

  const slack = await startSlack();
  adapters.push({
    name: 'slack',
    flags: ['--set', `api_url=${slack.url}`, '--set', `channel=${GENERAL}`],
    credentials: () => ({ bot_token: SLACK_TOKEN }),
    wrong: { bot_token: `xoxb-${planted('slack-wrong')}` },
    secrets: () => [SLACK_TOKEN],
    published: () => slack.messages.length,
    fail: (f) => {
      // Slack answers errors with HTTP 200 and an error code, besides its own 5xx
      const body =
        f === 'server-error'
          ? echo([SLACK_TOKEN])
          : JSON.stringify({ ok: false, error: f === 'bad-request' ? 'invalid_arguments' : 'invalid_auth', warning: echo([SLACK_TOKEN]), response_metadata: { messages: [echo([SLACK_TOKEN])] } });
      slack.postOverrides.push({ kind: 'answer', status: f === 'server-error' ? 500 : 200, body });
      return true;
    },
    close: () => slack.close(),
  });

  const x = await startX();
  const xPlanted = { access: planted('x-access'), refresh: planted('x-refresh'), client: planted('x-client') };
  x.accessToken = xPlanted.access;
  x.refreshToken = xPlanted.refresh;
  x.clientSecret = xPlanted.client;
  const xSecrets = () => [...Object.values(xPlanted), ...x.issued];
  adapters.push({
    name: 'x',
    flags: ['--set', `api_url=${x.url}`],
    credentials: () => ({ access_token: x.accessToken, refresh_token: x.refreshToken, client_id: CLIENT_ID, client_secret: x.clientSecret }),
    wrong: { access_token: planted('x-wrong'), client_id: CLIENT_ID },
    secrets: xSecrets,
    published: () => x.posts.length,
    expire: () => x.expireAccessToken(),
    renewals: () => ({ refreshed: x.requests.filter((r) => r.path === '/2/oauth2/token').length, signedIn: 0 }),
    fail: (f) => {
      if (f === 'credentials-refused') {
        // the access token expires and its refresh is refused: only an operator can help
        x.expireAccessToken();
        x.tokenOverrides.push({ kind: 'answer', status: 400, body: JSON.stringify({ error: 'invalid_request', error_description: echo(xSecrets()) }) });
      } else {
        x.postOverrides.push({ kind: 'answer', status: statusOf[f], body: JSON.stringify({ title: 'Problem', detail: echo(xSecrets()), type: 'about:blank', status: statusOf[f] }) });
      }
      return true;
    },
    close: () => x.close(),
  });

  const linkedin = await startLinkedIn();
  adapters.push({
    name: 'linkedin',
    flags: ['--set', `api_url=${linkedin.url}`, '--set', `author=${MEMBER}`],
    credentials: () => ({ access_token: LINKEDIN_TOKEN }),
    wrong: { access_token: planted('linkedin-wrong') },
    secrets: () => [LINKEDIN_TOKEN],
    published: () => linkedin.posts.length,
    fail: (f) => {
      linkedin.postOverrides.push({ kind: 'answer', status: statusOf[f], body: JSON.stringify({ status: statusOf[f], message: echo([LINKEDIN_TOKEN]), serviceErrorCode: 65600 }) });
      return true;
    },
    close: () => linkedin.close(),
  });

  const facebook = await startFacebook();
  adapters.push({
    name: 'facebook',
    // a JSON string: the page id stays text (as a number it could lose digits)
    flags: ['--set', `api_url=${facebook.url}`, '--set', `page_id="${PAGE_ID}"`],
    credentials: () => ({ page_access_token: FACEBOOK_TOKEN }),
    wrong: { page_access_token: planted('facebook-wrong') },
    secrets: () => [FACEBOOK_TOKEN],
    published: () => facebook.posts.length,
    fail: (f) => {
      const code = f === 'credentials-refused' ? 190 : f === 'bad-request' ? 100 : 2;
      facebook.feedOverrides.push({ kind: 'answer', status: f === 'server-error' ? 500 : 400, body: graphError(code, echo([FACEBOOK_TOKEN])) });
      return true;
    },
    close: () => facebook.close(),
  });

  // the webhook's URL carries tokens in its path and query; its HMAC secret signs every delivery
  const hook = { path: planted('hook-path'), query: planted('hook-query'), secret: planted('hmac') };
  const answers: Answer[] = [];
  const receiver = await startReceiver(() => answers.shift() ?? { status: 200, body: '{"id":"w1"}' });
  const hookUrl = `${receiver.url}/${hook.path}?token=${hook.query}`;
  adapters.push({
    name: 'webhook',
    flags: ['--url-from', 'env:HOOK_URL', '--secret-from', 'env:HOOK_SECRET'],
    credentials: () => null,
    wrong: null,
    secrets: () => [hook.path, hook.query, hook.secret, hookUrl],
    published: () => [...receiver.accepted.values()].reduce((sum, n) => sum + n, 0),
    env: { HOOK_URL: hookUrl, HOOK_SECRET: hook.secret },
    fail: (f) => {
      answers.push({ status: statusOf[f], body: JSON.stringify({ error: echo([hook.path, hook.query, hook.secret]), url: hookUrl }) });
      return true;
    },
    close: () => receiver.close(),
  });
  return adapters;
}

/** the forms a secret may take in a text: as it is, base64 (of its aligned beginning), base64url, URL-encoded */
function forms(secret: string): [string, string][] {
  const aligned = Buffer.from(secret.slice(0, secret.length - (secret.length % 3)));
  return [
    ['plain', secret],
    ['base64', aligned.toString('base64')],
    ['base64url', aligned.toString('base64url')],
    ['url-encoded', encodeURIComponent(secret)],
  ];
}

/** every table's rows as text, except the sealed credentials (which must not hold a secret in plain either: see the file check) */
async function readableColumns(db: TestDatabase): Promise<string> {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect !== 'sqlite') throw new Error('sqlite expected');
  const { default: Database } = await import('better-sqlite3');
  const raw = new Database(target.path, { readonly: true });
  try {
    const tables = raw.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[];
    assert.ok(tables.some((t) => t.name === 'channels'), 'the channels table exists');
    return tables
      .flatMap(({ name }) =>
        (raw.prepare(`SELECT * FROM "${name}"`).all() as Record<string, unknown>[]).map((row) => {
          if (name === 'channels') delete row['credentials'];
          return `${name}: ${JSON.stringify(row)}`;
        }),
      )
      .join('\n');
  } finally {
    raw.close();
  }
}

function databaseBytes(db: TestDatabase): string {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect !== 'sqlite') throw new Error('sqlite expected');
  return ['', '-wal']
    .map((suffix) => target.path + suffix)
    .filter((f) => fs.existsSync(f))
    .map((f) => fs.readFileSync(f).toString('latin1'))
    .join('');
}

/** makes every pending post due now (as if its wait had passed) */
async function dueNow(db: TestDatabase): Promise<void> {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect !== 'sqlite') throw new Error('sqlite expected');
  const { default: Database } = await import('better-sqlite3');
  const raw = new Database(target.path);
  try {
    raw.prepare("UPDATE post_schedule SET run_at = 0 WHERE status = 'pending'").run();
  } finally {
    raw.close();
  }
}

describe('planted secrets (SQLite, real processes, every platform with credentials)', () => {
  after(() => killAll());

  it('are in no output, log, error, status or readable column after successes, failures, refreshes and a rekey', async () => {
    const db = await createTestDatabase('sqlite');
    const adapters = await startAdapters();
    try {
      const credentialsEnv = Object.fromEntries(adapters.map((a) => [`CREDS_${a.name.toUpperCase()}`, JSON.stringify(a.credentials() ?? {})]));
      const env = testEnv(db.url, { ...credentialsEnv, ...Object.fromEntries(adapters.flatMap((a) => Object.entries(a.env ?? {}))), RETRY_BASE_MS: '0' });
      /** every output of every command, labelled for the failure message */
      const outputs: { label: string; text: string }[] = [];
      const cli = async (label: string, args: readonly string[], extra: Record<string, string> = {}, expectCode: number | null = 0) => {
        const r = await run(args, { ...env, ...extra }, 60_000);
        outputs.push({ label: `${label} (stdout)`, text: r.stdout }, { label: `${label} (stderr)`, text: r.stderr });
        if (expectCode !== null) assert.equal(r.code, expectCode, `${label}: exit ${String(r.code)}\n${r.stdout}\n${r.stderr}`);
        return r;
      };
      let posts = 0;
      // the first posts through `schedule` (one process per channel at once: SQLite waits
      // for its write lock); later ones straight into the store, whose output holds no secret
      const scheduleEverywhere = async (phase: string) => {
        if (posts === 0) {
          await Promise.all(
            adapters.map((a) => {
              posts++;
              return cli(`schedule ${phase} on ${a.name}`, ['schedule', '--channel', a.name, '--text', `${phase} ${a.name} ${posts}`]);
            }),
          );
          return;
        }
        const store = await openStore(parseDatabaseUrl(db.url));
        try {
          const due = new Date(Date.now() - 1000);
          for (const a of adapters) {
            const channel = await store.findChannel(a.name);
            assert.ok(channel !== null, a.name);
            posts++;
            await store.schedulePosts([{ channelId: channel.id, text: `${phase} ${a.name} ${posts}`, runAt: due }]);
          }
        } finally {
          await store.close();
        }
      };
      // the cycles' logs in both formats (the dispatcher's and the workers': they share its stdout and stderr)
      let cycles = 0;
      const cycle = async (phase: string) => {
        cycles++;
        return cli(`cron ${phase}`, ['cron'], { LOG_FORMAT: cycles % 2 === 0 ? 'json' : 'text' }, null);
      };
      const operatorViews = async (phase: string) => {
        await Promise.all([
          cli(`status ${phase}`, ['status']),
          cli(`status --json ${phase}`, ['status', '--json']),
          cli(`channels list ${phase}`, ['channels', 'list']),
          cli(`channels list --json ${phase}`, ['channels', 'list', '--json']),
        ]);
      };

      // add: checked with the network (wrong credentials first: refused, in one line without them)
      await cli('migrate', ['migrate']);
      await Promise.all(
        adapters.map(async (a) => {
          if (a.wrong !== null) {
            const refused = await cli(`add ${a.name} with wrong credentials`, ['channels', 'add', '--name', a.name, '--platform', a.name, ...a.flags, '--allow-private-network', '--credentials-from', 'env:WRONG'], { WRONG: JSON.stringify(a.wrong) }, 1);
            assert.match(refused.stderr, /did not accept the credentials/, `${a.name}: ${refused.stderr}`);
          }
          const credentials = a.credentials() === null ? [] : ['--credentials-from', `env:CREDS_${a.name.toUpperCase()}`];
          await cli(`add ${a.name}`, ['channels', 'add', '--name', a.name, '--platform', a.name, ...a.flags, '--allow-private-network', ...credentials]);
        }),
      );

      // success
      await scheduleEverywhere('first');
      await cycle('success');
      for (const a of adapters) assert.equal(a.published(), 1, `${a.name} published the first post`);

      // failures whose answers echo the secrets: a 500 (an unknown outcome, or a retry), a 400 (failed)
      for (const failure of ['server-error', 'bad-request'] as const) {
        for (const a of adapters) assert.ok(a.fail(failure));
        await scheduleEverywhere(failure);
        await cycle(failure);
      }
      await operatorViews('after failures');
      const status = await cli('status --json to find the posts to retry', ['status', '--json']);
      const report = JSON.parse(status.stdout) as { counts: { failed: number }; unknownPosts: { id: number }[]; recentFailures: { lastError: string }[] };
      assert.ok(report.counts.failed >= adapters.length, `every channel failed its 400: ${status.stdout}`);
      await cli('retry --failed', ['retry', '--failed']);
      if (report.unknownPosts.length > 0) await cli('retry unknown posts', ['retry', ...report.unknownPosts.map((p) => String(p.id))]);
      await cycle('after retry');

      // the network refuses the credentials: the channels need attention, until the operator gives new ones
      const refusing = adapters.filter((a) => a.fail('credentials-refused'));
      await scheduleEverywhere('refused');
      await cycle('credentials refused');
      const attention = await cli('status while channels need attention', ['status']);
      for (const a of refusing.filter((r) => r.name !== 'webhook')) {
        assert.match(attention.stdout, new RegExp(`channel ${a.name} needs attention`), `${a.name} needs attention:\n${attention.stdout}`);
      }
      await operatorViews('while channels need attention');
      await Promise.all(
        refusing.flatMap((a) => {
          const credentials = a.credentials();
          return credentials === null ? [] : [cli(`update ${a.name} with new credentials`, ['channels', 'update', '--name', a.name, '--credentials-from', 'env:NEW'], { NEW: JSON.stringify(credentials) })];
        }),
      );
      await cli('retry --failed after the refusals', ['retry', '--failed'], {}, null);
      await dueNow(db);
      await cycle('after new credentials');

      // refreshes: X's expired access token (refreshed with its refresh token and the client
      // secret); Bluesky's expired access JWT, then both of its tokens expired (a new session
      // with the app password)
      const renewing = adapters.filter((a) => a.expire !== undefined && a.renewals !== undefined);
      assert.deepEqual(renewing.map((a) => a.name).sort(), ['bluesky', 'x']);
      const renewals = () => renewing.map((a) => a.renewals?.() ?? { refreshed: 0, signedIn: 0 });
      const before = renewals();
      for (const a of renewing) a.expire?.('access');
      await scheduleEverywhere('refresh');
      await cycle('access tokens expired');
      const refreshed = renewals();
      renewing.forEach((a, i) => assert.ok((refreshed[i]?.refreshed ?? 0) > (before[i]?.refreshed ?? 0), `${a.name} refreshed its access token`));
      for (const a of renewing) a.expire?.('refresh');
      await scheduleEverywhere('new-session');
      await cycle('refresh tokens expired');
      const sky = renewing.findIndex((a) => a.name === 'bluesky');
      assert.ok((renewals()[sky]?.signedIn ?? 0) > (refreshed[sky]?.signedIn ?? 0), 'bluesky signed in again with its app password');
      await operatorViews('after refreshes');

      // a new key: every channel's credentials sealed again
      const newKey = Buffer.alloc(32, 9).toString('hex');
      await cli('rekey', ['channels', 'rekey'], { POST_SCHEDULER_SECRET_KEY: newKey, POST_SCHEDULER_OLD_SECRET_KEY: TEST_SECRET_KEY });
      await cli('status after rekey', ['status', '--json'], { POST_SCHEDULER_SECRET_KEY: newKey });
      await cli('channels list after rekey', ['channels', 'list'], { POST_SCHEDULER_SECRET_KEY: newKey });

      // every post went out in the end, so every path above was taken
      const final = JSON.parse((await cli('final status', ['status', '--json'], { POST_SCHEDULER_SECRET_KEY: newKey })).stdout) as { counts: Record<string, number> };
      assert.equal(final.counts['published'], posts, `every post published: ${JSON.stringify(final.counts)}`);

      outputs.push({ label: 'database (readable columns)', text: await readableColumns(db) }, { label: 'database file', text: databaseBytes(db) });
      const leaks: string[] = [];
      const secrets = new Set(adapters.flatMap((a) => [...a.secrets(), ...(JSON.stringify(a.wrong).match(/SECRET[-_][\w-]+/g) ?? [])]));
      for (const secret of secrets) {
        for (const [form, text] of forms(secret)) {
          for (const out of outputs) {
            const at = out.text.indexOf(text);
            if (at >= 0) leaks.push(`${form} ${secret} in ${out.label}: …${out.text.slice(Math.max(0, at - 80), at + text.length + 20)}…`);
          }
        }
      }
      assert.deepEqual(leaks, [], `secrets leaked:\n${leaks.join('\n')}`);
    } finally {
      killAll();
      for (const a of adapters) await a.close();
      await db.drop();
    }
  });
});
