/**
 * lib/storage owns where state lives: the jobs/users database (knex on MySQL or SQLite, with its
 * migrations) and the blob store for videos and MP3s (GridFS or a directory). Drivers for them are
 * imported only here.
 */
import fs from 'node:fs';
import path from 'node:path';
import knex, { type Knex } from 'knex';
import { lazyClient } from '../core/clients';
import { getConfig, type Config } from '../core/config';
import { UnavailableError } from '../core/errors';
import { migrationSource } from './migrations';

export type Db = Knex;
/** A transaction: a Db whose statements commit or roll back together. */
export type Trx = Knex.Transaction;

/** MySQL through mysql2 when DATABASE_URL is set, otherwise an SQLite file in the data directory. */
export function createDb(config: Pick<Config, 'databaseUrl' | 'dataDir' | 'timeouts'>): Db {
  if (config.databaseUrl) {
    return knex({
      client: 'mysql2',
      connection: { uri: config.databaseUrl, charset: 'utf8mb4', connectTimeout: config.timeouts.dbConnectMs } as Knex.MySql2ConnectionConfig,
      pool: { min: 0, max: 10 },
      acquireConnectionTimeout: config.timeouts.dbAcquireMs,
    });
  }
  // Users' password hashes, jobs and keys live here: readable by this user only (SQLite gives its WAL
  // and shared-memory files the database file's mode).
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(config.dataDir, 0o700);
  const filename = path.join(config.dataDir, 'video2mp3.sqlite');
  fs.closeSync(fs.openSync(filename, 'a', 0o600));
  fs.chmodSync(filename, 0o600);
  return knex({
    client: 'better-sqlite3',
    connection: { filename },
    useNullAsDefault: true,
    pool: {
      min: 1,
      max: 1,
      afterCreate: (conn: { pragma(s: string): unknown }, done: (err: Error | null, conn: unknown) => void) => {
        conn.pragma('journal_mode = WAL');
        conn.pragma('busy_timeout = 5000');
        done(null, conn);
      },
    },
  });
}

/** True when an insert broke a primary key or unique index, on MySQL and on SQLite alike. */
export const isDuplicateKey = (err: unknown): boolean =>
  ['ER_DUP_ENTRY', 'SQLITE_CONSTRAINT_PRIMARYKEY', 'SQLITE_CONSTRAINT_UNIQUE'].includes((err as { code?: string }).code ?? '');

/**
 * Brings the schema up to date; safe to run from many instances at once. Every function migrates at
 * its first database use, so after a deploy several do so together. knex's own lock cannot be trusted
 * with that: it creates its lock table's one row by reading and then inserting, so instances starting
 * together insert several rows, and from then on its lock can never be taken (it expects to update
 * exactly one row). So on MySQL the instances first queue on a server-side named lock (GET_LOCK) and,
 * holding it, are the only migrator: the lock table is set back to one free row (a crashed migrator's
 * lock freed) before knex runs. Waiting longer than `waitMs` makes the database unavailable (503).
 * SQLite is one process's file: there, callers of one client take turns.
 */
export async function migrate(db: Db, waitMs = 60_000): Promise<string[]> {
  if (await isUpToDate(db)) return [];
  const other = migrating.get(db);
  if (other) { // callers sharing one client take turns as instances do
    await other.catch(() => {});
    return migrate(db, waitMs);
  }
  const run = withMigrationLock(db, waitMs, async () => {
    if (await isUpToDate(db)) return []; // another instance did it while this one waited
    const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
    return applied;
  });
  migrating.set(db, run);
  try {
    return await run;
  } finally {
    migrating.delete(db);
  }
}

const migrating = new WeakMap<Db, Promise<string[]>>();

async function withMigrationLock<T>(db: Db, waitMs: number, fn: () => Promise<T>): Promise<T> {
  if (db.client.config.client !== 'mysql2') return fn();
  // A named lock is the server's, not the database's: the name carries the database's.
  const name = `video2mp3.migrate.${String(db.client.database())}`.slice(0, 64);
  const conn = await db.client.acquireConnection();
  try {
    const [rows] = (await db.raw('SELECT GET_LOCK(?, ?) AS got', [name, Math.ceil(waitMs / 1000)]).connection(conn)) as [{ got: number | null }[]];
    if (rows[0]?.got !== 1) throw new UnavailableError('the database (another instance is migrating it)');
    try {
      if (await db.schema.hasTable('knex_migrations_lock')) {
        const [first] = (await db('knex_migrations_lock').min({ index: 'index' })) as { index: number | null }[];
        if (first?.index != null) {
          await db('knex_migrations_lock').where('index', '>', first.index).delete();
          await db('knex_migrations_lock').update({ is_locked: 0 });
        }
      }
      return await fn();
    } finally {
      await db.raw('SELECT RELEASE_LOCK(?)', [name]).connection(conn);
    }
  } finally {
    await db.client.releaseConnection(conn);
  }
}

/**
 * Every function's first use of the database comes through migrate(), and nearly always finds nothing
 * to do. One query tells (~1 ms); knex's migrator, run cold, takes tens of milliseconds of the start
 * to find that out (its tables, its lock, the list). Anything else, or no answer, goes to the migrator.
 */
async function isUpToDate(db: Db): Promise<boolean> {
  try {
    const applied = new Set((await db('knex_migrations').select('name')).map((row: { name: string }) => row.name));
    return (await migrationSource.getMigrations([])).every((m) => applied.has(migrationSource.getMigrationName(m)));
  } catch {
    return false; // a new database has no knex_migrations yet
  }
}

/** The instance's database, migrated on first use. */
export const getDb = lazyClient(
  'db',
  async () => {
    const db = createDb(getConfig());
    try {
      await migrate(db);
    } catch (err) {
      await db.destroy();
      throw err;
    }
    return db;
  },
  (db) => db.destroy(),
);

/** A description of the backend for start-up logs, without credentials. */
export function describeDb(config: Pick<Config, 'databaseUrl' | 'dataDir'>): string {
  if (!config.databaseUrl) return `sqlite ${path.join(config.dataDir, 'video2mp3.sqlite')}`;
  const u = new URL(config.databaseUrl);
  return `mysql ${u.host}${u.pathname}`;
}
