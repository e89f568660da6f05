import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import postgres from 'postgres';
import { ARRAY_OIDS } from '../src/store/postgres/arrays.ts';
import { openPostgresConnection, type PostgresConnection } from '../src/store/postgres/connection.ts';
import { postgresUrl } from './helpers/databases.ts';
import { ROOT } from './helpers/processes.ts';

/**
 * The store's connections know the arrays they use instead of asking the server for every
 * array type at each connection (src/store/postgres/arrays.ts). Each array goes to the real
 * server and back, and the server reads it as it reads the same array from a client that
 * fetched its types (the driver's own array code).
 */
const AWKWARD = ['plain', '', 'NULL', 'a,b', '{braces}', 'say "hi"', 'back\\slash', 'tab\tand\nnewline', ' spaced ', 'émoji 🎉', 'ＦＵＬＬ'];
const CASES: { readonly type: string; readonly value: unknown[]; readonly back?: unknown[] }[] = [
  { type: 'text', value: [...AWKWARD, null] },
  { type: 'varchar', value: AWKWARD },
  { type: 'bigint', value: [0, 1, -5, 2 ** 53 - 1, null] },
  { type: 'int', value: [0, 7, -2147483648, 2147483647] },
  { type: 'smallint', value: [1, -1, 32767] },
  { type: 'real', value: [0.5, -2, 0] },
  { type: 'float8', value: [0.1, 1e300, -3.25] },
  {
    type: 'timestamptz',
    value: ['2026-12-04T10:00:00.000Z', '2026-01-01T00:00:00.123Z', null],
    back: [new Date('2026-12-04T10:00:00.000Z'), new Date('2026-01-01T00:00:00.123Z'), null],
  },
  // what the store sends as jsonb (rows.ts partsColumn): text that is JSON, kept as the driver kept it
  { type: 'jsonb', value: ['[{"text":"a, \\"b\\"","images":[]}]', { k: 'v' }, null], back: ['[{"text":"a, \\"b\\"","images":[]}]', { k: 'v' }, null] },
  { type: 'text', value: [] },
];

describe('postgres: array parameters and results without fetched types', () => {
  let c: PostgresConnection;
  let fetched: ReturnType<typeof postgres>;
  before(async () => {
    c = await openPostgresConnection({ url: postgresUrl(), schema: 'public' }, { timeoutMs: 10_000 });
    fetched = postgres(postgresUrl(), { max: 1, onnotice: () => undefined });
  });
  after(async () => {
    await c.end();
    await fetched.end({ timeout: 1 });
  });

  for (const { type, value, back } of CASES) {
    it(`${type}[] of ${value.length}: round trip, and the server reads what the driver's own arrays give it`, async () => {
      const [row] = await c.q<{ v: unknown[]; literal: string; n: number }>(`SELECT $1::${type}[] AS v, $1::${type}[]::text AS literal, cardinality($1::${type}[]) AS n`, [value]);
      assert.deepEqual(row?.v, back ?? value);
      assert.equal(row?.n, value.length);
      const [theirs] = await fetched.unsafe<{ literal: string }[]>(`SELECT $1::${type}[]::text AS literal`, [value as never], { prepare: true });
      assert.equal(row?.literal, theirs?.literal);
    });
  }

  it('reads arrays the server makes: array_agg, statistics cast to text[], an unnest of them', async () => {
    const [row] = await c.q<{ ids: number[]; words: string[]; freqs: number[] }>(
      `SELECT array_agg(x ORDER BY x) AS ids, ARRAY['a b', 'c"d', NULL, 'e\\f'] AS words, ARRAY[0.25, 0.5]::real[] AS freqs FROM generate_series(1, 3) x`,
    );
    assert.deepEqual(row, { ids: [1, 2, 3], words: ['a b', 'c"d', null, 'e\\f'], freqs: [0.25, 0.5] });
    const rows = await c.q<{ w: string | null }>('SELECT w FROM unnest($1::text[]) WITH ORDINALITY AS t(w, n) ORDER BY n', [AWKWARD]);
    assert.deepEqual(
      rows.map((r) => r.w),
      AWKWARD,
    );
  });

  it('a new connection sends its first statement without reading pg_type first', async () => {
    // a relay on 127.0.0.1 that keeps what the client sends
    const target = new URL(postgresUrl());
    const sent: Buffer[] = [];
    const relay = net.createServer((client) => {
      const server = net.connect(Number(target.port || 5432), target.hostname);
      client.on('data', (d: Buffer) => sent.push(d));
      client.pipe(server).pipe(client);
      client.on('error', () => server.destroy());
      server.on('error', () => client.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    const via = new URL(target);
    via.port = String((relay.address() as AddressInfo).port);
    try {
      const fresh = await openPostgresConnection({ url: via.toString(), schema: 'public' }, { timeoutMs: 10_000 });
      const [row] = await fresh.q<{ v: string[] }>("SELECT ARRAY['x', 'y'] AS v");
      await fresh.end();
      assert.deepEqual(row?.v, ['x', 'y']);
      const text = Buffer.concat(sent).toString('latin1');
      assert.match(text, /SELECT ARRAY\['x', 'y'\]/, 'the relay saw the statement');
      assert.ok(!text.includes('pg_type'), 'the client read pg_type before its first statement (fetch_types)');
    } finally {
      await new Promise<void>((resolve) => relay.close(() => resolve()));
    }
  });

  it("every array type the store's statements cast to is one given to the driver", () => {
    // PostgreSQL's spellings of the element types, and their arrays' oids
    const oids: Record<string, number> = { text: 1009, varchar: 1015, bigint: 1016, int8: 1016, int: 1007, integer: 1007, int4: 1007, smallint: 1005, real: 1021, float8: 1022, timestamptz: 1185, jsonb: 3807 };
    const dir = path.join(ROOT, 'src', 'store', 'postgres');
    const casts = new Set<string>();
    for (const file of fs.readdirSync(dir)) {
      if (file === 'migrations.ts') continue; // table definitions: no statement sends or reads those arrays but the ones below
      for (const m of fs.readFileSync(path.join(dir, file), 'utf8').matchAll(/::([a-z0-9_]+)\[\]/g)) casts.add(m[1] ?? '');
    }
    assert.ok(casts.has('text') && casts.has('bigint') && casts.has('timestamptz'), [...casts].join(' '));
    for (const type of casts) {
      const oid = oids[type];
      assert.ok(oid !== undefined && ARRAY_OIDS.includes(oid), `${type}[] is cast to in src/store/postgres but not given to the driver: add it to arrays.ts (and here)`);
    }
  });

  it('refuses an array holding undefined, with a message that says so', async () => {
    await assert.rejects(c.q('SELECT $1::text[] AS v', [['a', undefined]]), /undefined/);
  });
});
