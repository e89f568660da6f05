import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { DEFAULT_LINKEDIN_VERSION, escapeLittleText, linkedinPublisher } from '../src/publishers/linkedin.ts';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import { PLATFORMS, type Channel } from '../src/types.ts';
import { MEMBER, ORGANIZATION, TOKEN, VERSION, type FakeLinkedIn, startLinkedIn } from './helpers/fake-linkedin.ts';

describe('linkedin publisher', () => {
  const servers: FakeLinkedIn[] = [];
  const publishers: Publisher[] = [];
  after(async () => {
    for (const p of publishers) await p.close();
    for (const s of servers) await s.close();
  });
  const linkedin = async () => {
    const s = await startLinkedIn();
    servers.push(s);
    return s;
  };
  /** guarded as in production: the channels below opt in to 127.0.0.1 themselves */
  const publisher = (timeoutMs = 2_000) => {
    const p = linkedinPublisher.createPublisher({ timeoutMs, concurrency: 2, allowPrivateNetwork: false });
    publishers.push(p);
    return p;
  };

  const channel = (settings: Record<string, unknown>): Channel => ({
    id: 11,
    name: 'company-page',
    platform: 'linkedin',
    onUnknown: 'hold',
    settings,
    enabled: true,
    credentials: 'sealed',
    attention: null,
    createdAt: new Date(),
  });
  const request = (settings: Record<string, unknown>, overrides: { text?: string; token?: string | null } = {}): PublishRequest => ({
    postId: 42,
    attempt: 1,
    text: overrides.text ?? 'Hello, LinkedIn',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: 'key-42',
    images: [],
    part: { index: 0, count: 1 },
    replyTo: null,
    channel: channel(settings),
    credentials: overrides.token === null ? null : { access_token: overrides.token ?? TOKEN },
    saveCredentials: async () => undefined,
    signal: new AbortController().signal,
  });
  const local = (s: FakeLinkedIn, extra: Record<string, unknown> = {}) => ({ author: MEMBER, linkedin_version: VERSION, api_url: s.url, allow_private_network: true, ...extra });

  /** the error a promise fails with, checked to hold no trace of the token */
  async function rejection(p: Promise<unknown>): Promise<Error> {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof Error);
      assert.ok(!e.message.includes(TOKEN), `the token leaked into: ${e.message}`);
      assert.ok(!(e.stack ?? '').includes(TOKEN), 'the token leaked into the stack');
      assert.ok(!JSON.stringify(e).includes(TOKEN), 'the token leaked into a property');
      return e;
    }
    assert.fail('expected the call to fail');
  }

  it('is registered as platform linkedin: hold on unknown outcomes, no look-up', async () => {
    assert.equal(await loadPublisherModule('linkedin'), linkedinPublisher);
    assert.ok(PLATFORMS.includes('linkedin'));
    assert.equal(linkedinPublisher.defaultOnUnknown, 'hold');
    assert.equal(linkedinPublisher.canLookUp, false);
    assert.match(DEFAULT_LINKEDIN_VERSION, /^20\d{4}$/);
  });

  it('posts to /rest/posts with the versioned headers and takes the URN from x-restli-id', async () => {
    const s = await linkedin();
    const result = await publisher().publish(request(local(s)));
    const [post] = s.posts;
    assert.ok(post !== undefined);
    assert.match(post.urn, /^urn:li:share:\d+$/);
    assert.deepEqual(result, { externalId: post.urn, externalUrl: `https://www.linkedin.com/feed/update/${post.urn}/` });
    const [sent] = s.requests;
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, '/rest/posts');
    assert.equal(sent?.headers['authorization'], `Bearer ${TOKEN}`);
    assert.equal(sent?.headers['linkedin-version'], VERSION);
    assert.equal(sent?.headers['x-restli-protocol-version'], '2.0.0');
    assert.equal(sent?.headers['content-type'], 'application/json');
    assert.deepEqual(sent?.body, {
      author: MEMBER,
      commentary: 'Hello, LinkedIn',
      visibility: 'PUBLIC',
      distribution: { feedDistribution: 'MAIN_FEED', targetEntities: [], thirdPartyDistributionChannels: [] },
      lifecycleState: 'PUBLISHED',
      isReshareDisabledByAuthor: false,
    });
    assert.equal(s.requests.length, 1);
  });

  it('sends visibility CONNECTIONS when the channel says so, and the default version without a setting', async () => {
    const s = await linkedin();
    const p = publisher();
    await p.publish(request(local(s, { visibility: 'CONNECTIONS' })));
    assert.equal(s.requests[0]?.body?.['visibility'], 'CONNECTIONS');
    await p.publish(request({ author: MEMBER, api_url: s.url, allow_private_network: true }));
    assert.equal(s.requests[1]?.headers['linkedin-version'], DEFAULT_LINKEDIN_VERSION);
    assert.equal(s.posts.length, 2);
  });

  it('escapes the little text format reserved characters, leaving URLs and hashtags alone', async () => {
    assert.equal(escapeLittleText('a (b) [c] {d} <e> @f |g ~h _i *j \\k'), 'a \\(b\\) \\[c\\] \\{d\\} \\<e\\> \\@f \\|g \\~h \\_i \\*j \\\\k');
    assert.equal(escapeLittleText('#launch day, issue # 5, C#'), '#launch day, issue \\# 5, C\\#');
    assert.equal(escapeLittleText('see https://example.com/a_b(c)?x=1 (docs)'), 'see https://example.com/a_b(c)?x=1 \\(docs\\)');
    assert.equal(escapeLittleText('plain text, nothing reserved.'), 'plain text, nothing reserved.');
    const s = await linkedin();
    const text = 'Release 2.0 (beta) by @team_lead: <3 ~ *new* #release';
    await publisher().publish(request(local(s), { text }));
    assert.equal(s.posts[0]?.commentary, 'Release 2.0 \\(beta\\) by \\@team\\_lead: \\<3 \\~ \\*new\\* #release');
  });

  it('401 rejects the credentials, never naming the token', async () => {
    const s = await linkedin();
    const e = await rejection(publisher().publish(request(local(s), { token: `${TOKEN}x` })));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /linkedin channel company-page \(127\.0\.0\.1:\d+\) refused the access token \(HTTP 401: Invalid access token\)/);
    assert.equal(s.posts.length, 0);
  });

  it('403 (no permission to post as this author) rejects the credentials, naming the permission', async () => {
    const s = await linkedin();
    const e = await rejection(publisher().publish(request(local(s, { author: ORGANIZATION }))));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /may not post as urn:li:organization:2414183 \(HTTP 403, needs w_organization_social/);
    s.postOverrides.push({ kind: 'answer', status: 403, body: '{"status":403,"message":"Not enough permissions"}' });
    const member = await rejection(publisher().publish(request(local(s))));
    assert.ok(member instanceof CredentialsRejectedError, String(member));
    assert.match(member.message, /needs w_member_social/);
    assert.equal(s.posts.length, 0);
  });

  it('426 (version not supported) is permanent and names linkedin_version', async () => {
    const s = await linkedin();
    const e = await rejection(publisher().publish(request(local(s, { linkedin_version: '202401' }))));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /linkedin_version 202401 \(HTTP 426\)/);
    assert.equal(s.requests[0]?.headers['linkedin-version'], '202401');
  });

  it('429 waits for Retry-After when given, and was not delivered', async () => {
    const s = await linkedin();
    const p = publisher();
    s.postOverrides.push({ kind: 'answer', status: 429, body: '{"status":429,"message":"Resource level throttle"}', headers: { 'retry-after': '60' } });
    const e = await rejection(p.publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.retryAfterMs, 60_000);
    assert.equal(e.maybeDelivered, false);
    assert.match(e.message, /rate limited \(HTTP 429\)/);
    s.postOverrides.push({ kind: 'answer', status: 429, body: '{"status":429,"message":"Too many requests"}' });
    const bare = await rejection(p.publish(request(local(s))));
    assert.ok(bare instanceof RetryablePublishError, String(bare));
    assert.equal(bare.retryAfterMs, null);
    assert.equal(bare.maybeDelivered, false);
  });

  it('422 and 400 are permanent with a short redacted excerpt; an echoed token is hidden', async () => {
    const s = await linkedin();
    const p = publisher();
    s.postOverrides.push({ kind: 'answer', status: 422, body: JSON.stringify({ status: 422, message: `ERROR :: /commentary :: invalid for Bearer ${TOKEN} ${'x'.repeat(400)}` }) });
    const e = await rejection(p.publish(request(local(s))));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /HTTP 422: ERROR :: \/commentary :: invalid/);
    assert.ok(e.message.length < 300, 'an excerpt, not the whole answer');
    s.postOverrides.push({ kind: 'answer', status: 400, body: `{"message":"bad request","access_token":"${TOKEN}"}` });
    const bad = await rejection(p.publish(request(local(s))));
    assert.ok(bad instanceof PermanentPublishError, String(bad));
    assert.match(bad.message, /HTTP 400: bad request/);
    assert.equal(s.posts.length, 0);
  });

  it('500 and a 201 without x-restli-id are maybe delivered', async () => {
    const s = await linkedin();
    const p = publisher();
    s.postOverrides.push({ kind: 'answer', status: 500, body: '{"status":500,"message":"Internal Server Error"}' });
    const e = await rejection(p.publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /HTTP 500/);
    s.postOverrides.push({ kind: 'answer', status: 201, body: '' });
    const noUrn = await rejection(p.publish(request(local(s))));
    assert.ok(noUrn instanceof RetryablePublishError, String(noUrn));
    assert.equal(noUrn.maybeDelivered, true);
    assert.match(noUrn.message, /without a post URN/);
  });

  it('a connection cut after the request was sent is maybe delivered, and nothing is resent', async () => {
    const s = await linkedin();
    s.postOverrides.push({ kind: 'cut-after-post' });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /after the request was sent/);
    assert.equal(s.posts.length, 1, 'LinkedIn posted it');
    assert.equal(s.requests.length, 1, 'not sent again');
  });

  it('refuses 127.0.0.1 unless the channel opts in (SSRF protection); no token means no request', async () => {
    const s = await linkedin();
    const p = publisher();
    const e = await rejection(p.publish(request({ author: MEMBER, api_url: `https://${s.host}` })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /SSRF protection/);
    const none = await rejection(p.publish(request(local(s), { token: null })));
    assert.ok(none instanceof CredentialsRejectedError);
    const spaced = await rejection(p.publish(request(local(s), { token: `${TOKEN} x` })));
    assert.ok(spaced instanceof CredentialsRejectedError);
    assert.match(spaced.message, /access_token must be printable ASCII without spaces/);
    assert.equal(s.requests.length, 0);
  });

  it('checkText: at most 3,000 characters, not blank; a longer text fails before sending', async () => {
    const settings = { author: MEMBER };
    assert.equal(linkedinPublisher.checkText('a'.repeat(3_000), settings), null);
    assert.match(linkedinPublisher.checkText('a'.repeat(3_001), settings) ?? '', /3001 characters; LinkedIn takes at most 3000/);
    assert.match(linkedinPublisher.checkText(' \n ', settings) ?? '', /empty/);
    const s = await linkedin();
    const e = await rejection(publisher().publish(request(local(s), { text: 'b'.repeat(3_001) })));
    assert.ok(e instanceof PermanentPublishError);
    assert.equal(s.requests.length, 0);
  });

  it('verify: /v2/userinfo names the member, or rejects the credentials', async () => {
    const s = await linkedin();
    const options = { timeoutMs: 2_000, concurrency: 1 };
    assert.deepEqual(await linkedinPublisher.verify?.(local(s), { access_token: TOKEN }, options), { account: 'Ada Lovelace' });
    const sent = s.requests[0];
    assert.equal(sent?.method, 'GET');
    assert.equal(sent?.path, '/v2/userinfo');
    assert.equal(sent?.headers['authorization'], `Bearer ${TOKEN}`);
    const e = await rejection(linkedinPublisher.verify?.(local(s), { access_token: `${TOKEN}x` }, options) ?? Promise.resolve());
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /HTTP 401/);
    const refused = await rejection(linkedinPublisher.verify?.({ author: MEMBER, api_url: `https://${s.host}` }, { access_token: TOKEN }, options) ?? Promise.resolve());
    assert.ok(refused instanceof SettingsError, String(refused));
    const none = await rejection(linkedinPublisher.verify?.(local(s), null, options) ?? Promise.resolve());
    assert.ok(none instanceof SettingsError, String(none));
    assert.equal(s.requests.length, 2);
  });

  it('validates settings and credentials in one line, never echoing the token', () => {
    const problem = (settings: Record<string, unknown>) => {
      try {
        linkedinPublisher.parseSettings(settings);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        return e.message;
      }
    };
    assert.equal(problem({ author: MEMBER }), null);
    assert.equal(problem({ author: ORGANIZATION, visibility: 'CONNECTIONS', linkedin_version: '202512' }), null);
    assert.match(problem({}) ?? '', /needs an author/);
    assert.match(problem({ author: 'urn:li:company:1' }) ?? '', /member or organization URN/);
    assert.match(problem({ author: MEMBER, visibility: 'LOGGED_IN' }) ?? '', /PUBLIC or CONNECTIONS/);
    assert.match(problem({ author: MEMBER, linkedin_version: '2026-03' }) ?? '', /YYYYMM/);
    assert.equal(problem({ author: MEMBER, api_url: 'http://api.linkedin.example' }), 'linkedin api_url must be https:// (http:// only with allow_private_network)');
    assert.match(problem({ author: MEMBER, api_url: 'https://api.linkedin.com?x=1' }) ?? '', /query/);
    const credentials = (c: Record<string, unknown>) => {
      try {
        linkedinPublisher.parseCredentials?.(c);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        assert.ok(!e.message.includes(TOKEN));
        return e.message;
      }
    };
    assert.equal(credentials({ access_token: TOKEN }), null);
    assert.match(credentials({}) ?? '', /access_token/);
    assert.match(credentials({ access_token: `${TOKEN}\n` }) ?? '', /access_token/);
    assert.deepEqual(linkedinPublisher.redactSettings({ author: MEMBER }), { author: MEMBER });
  });
});
