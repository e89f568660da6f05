import { foreignTablesMessage, newerSchemaMessage, StoreError, type Store } from '../store.ts';
import { makeMysqlAlerts } from './alerts.ts';
import { makeMysqlChannels } from './channels.ts';
import { openMysqlConnection, type MysqlOptions, type MysqlTarget } from './connection.ts';
import { makeMysqlCoordination } from './coordination.ts';
import { makeMysqlFigures } from './figures.ts';
import { makeMysqlHistory } from './history.ts';
import { MYSQL_MIGRATIONS } from './migrations.ts';
import { makeMysqlPosts } from './posts.ts';
import { makeMysqlQueue } from './queue.ts';
import { makeMysqlRate } from './rate.ts';

export type { MysqlOptions, MysqlTarget } from './connection.ts';

/** The migration's named lock: this and the database's MD5 (MySQL takes names of at most 64 characters). */
const MIGRATE_LOCK = 'post-scheduler:migrate:';

/** How long a process waits for another's migration (GET_LOCK), in seconds. */
const MIGRATE_LOCK_WAIT_S = 600;

/**
 * MySQL 8 / MariaDB 10.6+ store over one connection. Claims use FOR UPDATE SKIP LOCKED in
 * short READ COMMITTED transactions, so workers on any number of hosts take disjoint sets
 * of posts without waiting; every time (run_at, leases, coordination rows) is on the
 * server's clock. The tables live in the URL's database, which holds nothing else.
 */
export async function openMysqlStore(target: MysqlTarget, options: MysqlOptions = { timeoutMs: 10_000 }): Promise<Store> {
  const c = await openMysqlConnection(target, options);
  const { q, where } = c;
  const latest = Math.max(...MYSQL_MIGRATIONS.map((m) => m.version));
  const known = MYSQL_MIGRATIONS.map((m) => m.version);

  /** Our tables' schema version (null: none yet); refuses a database of another application's tables. */
  const schemaVersion = async (): Promise<{ version: number | null; complete: boolean }> => {
    const tables = (await q<{ name: string }>('SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_name')).map(
      (t) => t.name,
    );
    if (tables.length === 0) return { version: null, complete: false };
    const ours =
      tables.includes('schema_migrations') &&
      (
        await q<{ n: number }>(
          "SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'schema_migrations' AND column_name = 'name'",
        )
      )[0]?.n === 1;
    if (!ours) {
      throw new StoreError(foreignTablesMessage(`database ${target.database} of ${where}`, tables, 'give post-scheduler a database of its own'));
    }
    const [row] = await q<{ v: number | null; n: number }>('SELECT max(version) AS v, sum(version IN (?)) AS n FROM schema_migrations', [known]);
    return { version: row?.v ?? null, complete: (row?.n ?? 0) === known.length };
  };

  const store: Store = {
    ...makeMysqlQueue(c),
    ...makeMysqlPosts(c),
    ...makeMysqlChannels(c),
    ...makeMysqlCoordination(c),
    ...makeMysqlRate(c),
    ...makeMysqlAlerts(c),
    ...makeMysqlHistory(c),
    ...makeMysqlFigures(c),
    dialect: 'mysql',
    inProcess: false,
    created: false,

    async migrate() {
      // the usual case: the schema is current, and two plain queries say so
      const first = await schemaVersion();
      if (first.version !== null && first.version > latest) throw new StoreError(newerSchemaMessage(first.version, latest, where));
      if (first.version === latest && first.complete) return;
      await c.session(async (t) => {
        // one migrating process per database; the others wait, then find it done
        const [lock] = await t.q<{ got: number | null }>('SELECT GET_LOCK(CONCAT(?, MD5(DATABASE())), ?) AS got', [MIGRATE_LOCK, MIGRATE_LOCK_WAIT_S]);
        if (lock?.got !== 1) throw new StoreError(`MySQL at ${where}: another process held the migration lock for ${MIGRATE_LOCK_WAIT_S} s`);
        try {
          await t.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
            version INT NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL, applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
          ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`);
          const applied = new Set((await t.q<{ version: number }>('SELECT version FROM schema_migrations')).map((r) => r.version));
          const newest = Math.max(0, ...applied);
          if (newest > latest) throw new StoreError(newerSchemaMessage(newest, latest, where));
          for (const m of MYSQL_MIGRATIONS) {
            if (applied.has(m.version)) continue;
            for (const statement of m.statements) await t.exec(statement);
            await t.exec('INSERT INTO schema_migrations (version, name) VALUES (?, ?)', [m.version, m.name]);
          }
        } finally {
          await t.q('SELECT RELEASE_LOCK(CONCAT(?, MD5(DATABASE())))', [MIGRATE_LOCK]).catch(() => undefined);
        }
      });
    },

    async connections() {
      const [row] = await q<{ max: number; used: number }>(
        "SELECT @@max_connections AS max, (SELECT count(*) FROM information_schema.processlist WHERE command <> 'Daemon') AS used",
      );
      return row ?? null;
    },

    async ping() {
      await q('SELECT 1');
    },

    async close() {
      await c.end();
    },
  };
  return store;
}
