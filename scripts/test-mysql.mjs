// Finds a MySQL or MariaDB server for the store's own suites (conformance, pipeline,
// outage, chaos on a third dialect). npm ships no such server, so unlike PostgreSQL none
// is started here:
//
// 1. TEST_MYSQL_URL, when set, must answer (TEST_MYSQL_URL=none: do not look);
// 2. else the local default, mysql://root@127.0.0.1:3306/test.
//
// Where none answers, npm test still runs everything else and ends with one line saying
// the MySQL runs did not happen and how to have them; REQUIRE_MYSQL=1 (set by .ci/run)
// makes that a failure instead.
import mysql from 'mysql2/promise';

export const MYSQL_LOCAL_DEFAULT = 'mysql://root@127.0.0.1:3306/test';

/** The server's version when `url` answers, else the reason it does not (one line). */
export async function probeMysql(url, timeoutMs = 3000) {
  let conn;
  try {
    conn = await mysql.createConnection({ uri: url.replace(/^mariadb:/, 'mysql:'), connectTimeout: timeoutMs });
    const [rows] = await conn.query('SELECT VERSION() AS v');
    return { ok: true, version: rows[0].v };
  } catch (e) {
    return { ok: false, reason: e instanceof Error ? e.message : String(e) };
  } finally {
    conn?.destroy();
  }
}

const redact = (url) => url.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@');

/**
 * { url } of the server to test against, or { url: null, line } with the line npm test
 * ends with. Throws when TEST_MYSQL_URL names a server that does not answer, or when
 * REQUIRE_MYSQL=1 and none was found.
 */
export async function findMysql(env = process.env) {
  const given = env.TEST_MYSQL_URL;
  const required = env.REQUIRE_MYSQL === '1';
  if (given === 'none') {
    if (required) throw new Error('REQUIRE_MYSQL=1 but TEST_MYSQL_URL=none');
    return { url: null, line: 'MySQL/MariaDB: not tested (TEST_MYSQL_URL=none)' };
  }
  const url = given !== undefined && given !== '' ? given : MYSQL_LOCAL_DEFAULT;
  const found = await probeMysql(url);
  if (found.ok) return { url, version: found.version };
  const why = `no MySQL/MariaDB server answers at ${redact(url)} (${found.reason})`;
  if ((given !== undefined && given !== '') || required) {
    throw new Error(`${why}${required ? ' and REQUIRE_MYSQL=1' : ''}`);
  }
  return {
    url: null,
    line: `MySQL/MariaDB: the store's suites did NOT run on it: ${why}; start one there, or set TEST_MYSQL_URL=mysql://user:pass@host:3306/db`,
  };
}
