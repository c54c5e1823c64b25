// The schema's migrations through migrate() (lib/storage/db.ts), which every function runs on its first
// use of the database, on a new SQLite file and a new MariaDB database. A new database gets every
// migration; an up-to-date one gets none, from one query instead of knex's migrator; and one that is a
// migration behind gets that migration: the quick check must never skip one.
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
  /** A new, empty database, and how to remove it. */
  create(): Promise<{ db: Db; drop(): Promise<void> }>;
}

const backends: Backend[] = [
  {
    name: 'SQLite',
    async create() {
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'migrations-'));
      const db = createDb({ dataDir, timeouts });
      return { db, drop: async () => fs.rmSync(dataDir, { recursive: true, force: true }) };
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

  it('when the database is new, then every migration is applied, in order', async () => {
    expect(await migrate(created.db)).toEqual(await all());
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
});
