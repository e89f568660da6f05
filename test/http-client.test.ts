import assert from 'node:assert/strict';
import { getEventListeners, once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { createHttpClient, HttpSendFailure, MAX_BODY_BYTES, multipartBody, type HttpClient } from '../src/publishers/http-client.ts';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
  readonly remotePort: number;
}

interface Server {
  readonly url: string;
  readonly seen: Seen[];
  /** resolves when the next request's body has been read */
  next(): Promise<Seen>;
  close(): Promise<void>;
}

/** A local server on 127.0.0.1; `handle` answers (or not) once the request's body is read. */
async function startServer(handle: (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => void): Promise<Server> {
  const seen: Seen[] = [];
  const waiting: ((s: Seen) => void)[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const s: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks), remotePort: req.socket.remotePort ?? 0 };
      seen.push(s);
      handle(req, res, s);
      for (const w of waiting.splice(0)) w(s);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    next: () => new Promise((resolve) => waiting.push(resolve)),
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

async function failure(p: Promise<unknown>): Promise<HttpSendFailure> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof HttpSendFailure, `expected an HttpSendFailure, got ${String(e)}`);
    return e;
  }
  assert.fail('expected the request to fail');
}

describe('http client', () => {
  const servers: Server[] = [];
  const clients: HttpClient[] = [];
  after(async () => {
    for (const c of clients) await c.close();
    for (const s of servers) await s.close();
  });
  const server = async (handle: Parameters<typeof startServer>[0]) => {
    const s = await startServer(handle);
    servers.push(s);
    return s;
  };
  const client = (timeoutMs = 2_000, allowPrivateNetwork = true) => {
    const c = createHttpClient({ timeoutMs, concurrency: 2, allowPrivateNetwork });
    clients.push(c);
    return c;
  };
  const signal = () => new AbortController().signal;

  it('sends method, headers and body, reads status, headers and a JSON answer, and keeps the connection alive', async () => {
    const s = await server((_req, res) => {
      res.writeHead(201, { 'content-type': 'application/json', 'x-thing': 'yes' });
      res.end('{"id":"7"}');
    });
    const c = client();
    const sig = signal();
    const answer = await c.request({ method: 'POST', url: new URL('/api/x?a=1', s.url), headers: { 'content-type': 'application/json', authorization: 'Bearer t' }, body: '{"a":1}', signal: sig });
    assert.equal(answer.status, 201);
    assert.equal(answer.headers['x-thing'], 'yes');
    assert.deepEqual(answer.json(), { id: '7' });
    assert.equal(answer.text(), '{"id":"7"}');
    assert.equal(answer.truncated, false);
    const [first] = s.seen;
    assert.equal(first?.method, 'POST');
    assert.equal(first?.url, '/api/x?a=1');
    assert.equal(first?.headers['authorization'], 'Bearer t');
    assert.equal(first?.headers['content-length'], '7');
    assert.equal(first?.body.toString(), '{"a":1}');
    const again = await c.request({ method: 'GET', url: new URL('/b', s.url), signal: sig });
    assert.equal(again.status, 201);
    assert.equal(s.seen[1]?.remotePort, first?.remotePort, 'the second request reuses the kept-alive socket');
    assert.equal(getEventListeners(sig, 'abort').length, 0, 'no abort listener is left on the signal');
  });

  it('sends each fresh request on a connection of its own, closed after its answer, more at once than the pool holds', async () => {
    const open = new Set<number>();
    const s = await server((req, res) => {
      const port = req.socket.remotePort ?? 0;
      open.add(port);
      req.socket.once('close', () => open.delete(port));
      // the first five are answered once all five are in: they are in flight together
      pending.push(() => res.end('ok'));
      if (s.seen.length >= 5) for (const answer of pending.splice(0)) answer();
    });
    const pending: (() => void)[] = [];
    const c = client();
    const sig = signal();
    const answers = await Promise.all([1, 2, 3, 4, 5].map((i) => c.request({ method: 'POST', url: new URL(`/p${i}`, s.url), body: String(i), signal: sig, connection: 'fresh' })));
    assert.deepEqual(answers.map((a) => a.text()), ['ok', 'ok', 'ok', 'ok', 'ok']);
    const again = await c.request({ method: 'POST', url: new URL('/p6', s.url), body: '6', signal: sig, connection: 'fresh' });
    assert.equal(again.text(), 'ok');
    const ports = s.seen.map((x) => x.remotePort);
    assert.equal(new Set(ports).size, 6, `six connections for six fresh requests (ports ${ports.join(', ')})`);
    assert.ok(s.seen.every((x) => x.headers.connection === 'close'), 'each fresh request asks the server to close its connection');
    for (let i = 0; i < 50 && open.size > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(open.size, 0, 'no fresh connection is left open after its answer');
  });

  it('gives json() null for an answer that is not JSON', async () => {
    const s = await server((_req, res) => res.end('<html>oops</html>'));
    const answer = await client().request({ method: 'GET', url: new URL(s.url), signal: signal() });
    assert.equal(answer.json(), null);
    assert.equal(answer.text(), '<html>oops</html>');
  });

  it('refuses 127.0.0.1 without an opt-in (SSRF guard): nothing sent, addressRefused', async () => {
    const s = await server((_req, res) => res.end('reached'));
    const guarded = client(2_000, false);
    const f = await failure(guarded.request({ method: 'POST', url: new URL(s.url), body: 'x', signal: signal() }));
    assert.equal(f.addressRefused, true);
    assert.equal(f.sent, false);
    assert.equal(s.seen.length, 0, 'the server got nothing');
    assert.match(f.message, /SSRF protection/);
    // the channel's own opt-in opens it for that request only
    const opened = await guarded.request({ method: 'POST', url: new URL(s.url), body: 'x', signal: signal(), allowPrivateNetwork: true });
    assert.equal(opened.text(), 'reached');
    const again = await failure(guarded.request({ method: 'GET', url: new URL(s.url), signal: signal() }));
    assert.equal(again.addressRefused, true);
  });

  it('a timeout after the request was sent is sent=true, timedOut', async () => {
    const s = await server(() => undefined); // never answers
    const sig = signal();
    const p = client(300).request({ method: 'POST', url: new URL(s.url), body: 'hello', signal: sig });
    const f = await failure(p);
    assert.equal(f.timedOut, true);
    assert.equal(f.sent, true);
    assert.equal(f.addressRefused, false);
    assert.equal(s.seen.length, 1);
    assert.equal(getEventListeners(sig, 'abort').length, 0);
  });

  it('a refused connection is sent=false with its code', async () => {
    const s = await startServer(() => undefined);
    const url = new URL(s.url);
    await s.close(); // nothing listens on that port any more
    const f = await failure(client().request({ method: 'POST', url, body: 'x', signal: signal() }));
    assert.equal(f.sent, false);
    assert.equal(f.timedOut, false);
    assert.equal(f.code, 'ECONNREFUSED');
  });

  it('a connection cut after the request was sent is sent=true', async () => {
    const s = await server((req) => req.socket.destroy());
    const f = await failure(client().request({ method: 'POST', url: new URL(s.url), body: 'x', signal: signal() }));
    assert.equal(f.sent, true);
    assert.equal(f.code, 'ECONNRESET');
  });

  it('an answer cut before its end is a failure, sent=true', async () => {
    const s = await server((req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"id":', () => req.socket.destroy());
    });
    const f = await failure(client().request({ method: 'POST', url: new URL(s.url), body: 'x', signal: signal() }));
    assert.equal(f.sent, true);
  });

  it('reads at most MAX_BODY_BYTES of an answer', async () => {
    const s = await server((_req, res) => {
      res.writeHead(200);
      const chunk = Buffer.alloc(64 * 1024, 'a');
      // a little more than the cap, then never ends: the client must stop by itself
      let written = 0;
      const more = () => {
        while (written <= MAX_BODY_BYTES) {
          written += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', more);
            return;
          }
        }
      };
      more();
    });
    const answer = await client().request({ method: 'GET', url: new URL(s.url), signal: signal() });
    assert.equal(answer.truncated, true);
    assert.equal(answer.body.length, MAX_BODY_BYTES);
  });

  it('an abort before sending sends nothing; an abort after sending is sent=true', async () => {
    const s = await server(() => undefined);
    const c = client();
    const early = new AbortController();
    early.abort(new Error('stop'));
    const f1 = await failure(c.request({ method: 'POST', url: new URL(s.url), body: 'x', signal: early.signal }));
    assert.equal(f1.aborted, true);
    assert.equal(f1.sent, false);
    assert.equal(s.seen.length, 0);

    const late = new AbortController();
    const arrived = s.next();
    const p = c.request({ method: 'POST', url: new URL(s.url), body: 'x', signal: late.signal });
    await arrived;
    late.abort(new Error('stop'));
    const f2 = await failure(p);
    assert.equal(f2.aborted, true);
    assert.equal(f2.sent, true);
    assert.match(f2.message, /interrupted/);
    assert.equal(getEventListeners(late.signal, 'abort').length, 0);
  });

  it('does not send again after a failure on a reused socket', async () => {
    let n = 0;
    const s = await server((req, res) => {
      n += 1;
      if (n === 1) res.end('first');
      else req.socket.destroy();
    });
    const c = client();
    assert.equal((await c.request({ method: 'POST', url: new URL(s.url), body: 'a', signal: signal() })).text(), 'first');
    const f = await failure(c.request({ method: 'POST', url: new URL(s.url), body: 'b', signal: signal() }));
    assert.equal(f.sent, true);
    assert.equal(s.seen.length, 2, 'the failed request went out once');
    assert.equal(s.seen[1]?.remotePort, s.seen[0]?.remotePort, 'it had gone out on the reused socket');
  });

  it('builds a multipart/form-data body that a standard parser reads', async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 1, 2]);
    const { body, contentType } = multipartBody({ description: 'a "quoted"\nline', focus: '0.0,0.0' }, [
      { name: 'file', filename: 'pic "1".png', contentType: 'image/png', data: png },
    ]);
    const boundary = /^multipart\/form-data; boundary=(.+)$/.exec(contentType)?.[1];
    assert.ok(boundary !== undefined);
    // RFC 7578: parts between --boundary lines, headers, a blank line, the content
    const text = body.toString('latin1');
    assert.ok(text.endsWith(`--${boundary}--\r\n`));
    const parts = text.slice(0, -`--${boundary}--\r\n`.length).split(`--${boundary}\r\n`).slice(1);
    assert.equal(parts.length, 3);
    const parse = (part: string) => {
      const split = part.indexOf('\r\n\r\n');
      return { head: part.slice(0, split), content: part.slice(split + 4, -2) };
    };
    const [description, focus, file] = parts.map(parse);
    assert.equal(description?.head, 'Content-Disposition: form-data; name="description"');
    assert.equal(Buffer.from(description?.content ?? '', 'latin1').toString('utf8'), 'a "quoted"\nline');
    assert.equal(focus?.content, '0.0,0.0');
    assert.equal(file?.head, 'Content-Disposition: form-data; name="file"; filename="pic %221%22.png"\r\nContent-Type: image/png');
    assert.deepEqual(Buffer.from(file?.content ?? '', 'latin1'), png);
    assert.ok(!png.toString('latin1').includes(boundary), 'the boundary is not in the data');
  });
});
