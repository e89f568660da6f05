/**
 * PostgreSQL arrays of the element types the store sends and reads, given to postgres.js
 * as types of its own, so that a new connection need not ask the server for every array
 * type it has (the driver's `fetch_types`, one more round trip and ~300 rows to read
 * before the first statement: 9.4 ms against 5.7 for a fresh connection and its first
 * query, 3.8 ms of CPU against 2.0; the dispatcher opens two, each worker one).
 *
 * The oids are PostgreSQL's own for its built-in types, the same on every server. Each
 * element is written as the driver writes a value of the element's type, so a statement
 * gets what it got with the fetched types. One-dimensional arrays only: the store sends
 * no other.
 */
type Element = { readonly serialize: (x: unknown) => string; readonly parse: (raw: string) => unknown };

const text: Element = { serialize: (x) => String(x), parse: (raw) => raw };
const number: Element = { serialize: (x) => String(x), parse: (raw) => Number(raw) };
const timestamp: Element = {
  serialize: (x) => (x instanceof Date ? x : new Date(x as string | number)).toISOString(),
  parse: (raw) => new Date(raw),
};
const json: Element = { serialize: (x) => JSON.stringify(x), parse: (raw) => JSON.parse(raw) as unknown };

/** each array type: its oid (pg_type.typarray of its element's type) and how its elements are written and read */
const ARRAYS: Readonly<Record<string, { readonly oid: number; readonly element: Element }>> = {
  int2Array: { oid: 1005, element: number },
  int4Array: { oid: 1007, element: number },
  textArray: { oid: 1009, element: text },
  varcharArray: { oid: 1015, element: text },
  int8Array: { oid: 1016, element: number },
  float4Array: { oid: 1021, element: number },
  float8Array: { oid: 1022, element: number },
  timestamptzArray: { oid: 1185, element: timestamp },
  jsonbArray: { oid: 3807, element: json },
};

const quoted = (s: string): string => `"${s.replace(/[\\"]/g, '\\$&')}"`;

/** `xs` as an array literal: every element quoted, null as NULL. */
export function arrayLiteral(xs: unknown, element: Element): string {
  if (!Array.isArray(xs)) return String(xs);
  return `{${xs
    .map((x: unknown) => {
      if (x === null) return 'NULL';
      if (x === undefined) throw new Error('an array parameter holds undefined (use null)');
      if (Array.isArray(x)) throw new Error('an array parameter holds an array: only one-dimensional arrays are sent');
      return quoted(element.serialize(x));
    })
    .join(',')}}`;
}

/** A one-dimensional array as the server writes it (`{a,"b c",NULL}`), its elements parsed. */
export function parseArray(raw: string, element: Element): unknown[] {
  if (raw.length < 2 || raw[0] !== '{' || raw[raw.length - 1] !== '}') throw new Error(`not an array literal: ${raw.slice(0, 40)}`);
  const out: unknown[] = [];
  if (raw === '{}') return out;
  const end = raw.length - 1;
  let i = 1;
  while (i < end) {
    if (raw[i] === '{') throw new Error('a multi-dimensional array was read: only one-dimensional arrays are expected');
    if (raw[i] === '"') {
      let s = '';
      i++;
      while (i < end && raw[i] !== '"') {
        if (raw[i] === '\\') i++;
        s += raw[i] ?? '';
        i++;
      }
      out.push(element.parse(s));
      i++; // the closing quote
    } else {
      let j = i;
      while (j < end && raw[j] !== ',') j++;
      const token = raw.slice(i, j);
      out.push(token === 'NULL' ? null : element.parse(token));
      i = j;
    }
    i++; // the comma
  }
  return out;
}

/** The array oids given to the driver. */
export const ARRAY_OIDS: readonly number[] = Object.values(ARRAYS).map((a) => a.oid);

/** The arrays as postgres.js `types` entries. */
export const arrayTypes = Object.fromEntries(
  Object.entries(ARRAYS).map(([name, { oid, element }]) => [
    name,
    { to: oid, from: [oid], serialize: (xs: unknown) => arrayLiteral(xs, element), parse: (raw: string) => parseArray(raw, element) },
  ]),
);
