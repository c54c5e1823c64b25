// The schema's migrations through migrate() (lib/storage/db.ts), which every function runs on its first
// use of the database, on a new SQLite file and a new MariaDB database. A new database gets every
// migration, also when several instances start on it at once; an up-to-date one gets none, from one
// query instead of knex's migrator; and one that is a migration behind gets that migration: the quick
// check must never skip one.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../lib/core/config';
import { createDb, migrate, type Db } from '../lib/storage/db';
import { migrationSource } from '../lib/storage/migrations';
import { uniqueName } from './support/stack';

const { timeouts } = loadConfig({});

interface Backend {
  name: string;
  /**
   * A new, empty database, another client on it as another instance has one (SQLite's instances are
   * one process's, sharing its one client), and how to remove it.
   */
  create(): Promise<{ db: Db; another(): Db; drop(): Promise<void> }>;
}

const backends: Backend[] = [
  {
    name: 'SQLite',
    async create() {
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'migrations-'));
      const db = createDb({ dataDir, timeouts });
      return { db, another: () => db, drop: async () => fs.rmSync(dataDir, { recursive: true, force: true }) };
    },
  },
];
// The global setup sets TEST_DATABASE_URL when MariaDB answers (and fails the run under CI when not).
if (process.env.TEST_DATABASE_URL) {
  const admin = process.env.TEST_DATABASE_URL;
  backends.push({
    name: 'MariaDB',
    async create() {
      const name = uniqueName('migrations');
      const root = createDb({ databaseUrl: admin, dataDir: '', timeouts });
      await root.raw(`CREATE DATABASE ${name} CHARACTER SET utf8mb4`);
      const url = new URL(admin);
      url.pathname = `/${name}`;
      const db = createDb({ databaseUrl: url.toString(), dataDir: '', timeouts });
      return {
        db,
        another: () => createDb({ databaseUrl: url.toString(), dataDir: '', timeouts }),
        drop: async () => {
          await root.raw(`DROP DATABASE ${name}`);
          await root.destroy();
        },
      };
    },
  });
}

const all = async (): Promise<string[]> => (await migrationSource.getMigrations([])).map((m) => migrationSource.getMigrationName(m));

describe.each(backends)('migrations on $name', (backend) => {
  let created: Awaited<ReturnType<Backend['create']>>;
  const applied = async (): Promise<string[]> => (await created.db('knex_migrations').orderBy('id').select('name')).map((r: { name: string }) => r.name);

  beforeAll(async () => {
    created = await backend.create();
  });
  afterAll(async () => {
    await created.db.destroy();
    await created.drop();
  });

  it('when five instances migrate the new database at once, then one applies every migration, in order, and none fails', async () => {
    // As after a deploy: every function migrates at its first request. knex fails all but the lock's holder.
    const others = Array.from({ length: 4 }, () => created.another());
    try {
      const results = await Promise.all([created.db, ...others].map((db) => migrate(db)));
      expect(results.filter((r) => r.length > 0)).toEqual([await all()]);
    } finally {
      await Promise.all(others.filter((db) => db !== created.db).map((db) => db.destroy()));
    }
    expect(await applied()).toEqual(await all());
    expect(await created.db.schema.hasTable('jobs')).toBe(true);
  });

  it('when the schema is up to date, then nothing is applied and nothing is recorded twice', async () => {
    expect(await migrate(created.db)).toEqual([]);
    expect(await applied()).toEqual(await all());
  });

  it('when the database is one migration behind, then exactly that migration is applied', async () => {
    const names = await all();
    const last = (await migrationSource.getMigrations([])).at(-1)!;
    // Undo the newest migration as knex would, so the database is where it was before it shipped.
    await created.db.migrate.down({ migrationSource } as Knex.MigratorConfig);
    expect(await applied()).toEqual(names.slice(0, -1));
    expect(await migrate(created.db)).toEqual([migrationSource.getMigrationName(last)]);
    expect(await applied()).toEqual(names);
  });

  // MySQL only: on SQLite knex's lock is never contended (one process, one client).
  if (backend.name === 'MariaDB') it('when knex\'s lock table holds several rows, one of them locked (a race or a crash before), then the next migration still runs and leaves one free row', async () => {
    await created.db.migrate.down({ migrationSource } as Knex.MigratorConfig);
    await created.db('knex_migrations_lock').insert([{ is_locked: 1 }, { is_locked: 0 }]);
    expect(await migrate(created.db)).toHaveLength(1);
    expect(await applied()).toEqual(await all());
    expect(await created.db('knex_migrations_lock').select('is_locked')).toEqual([{ is_locked: 0 }]);
  });
});
