import type { Knex } from 'knex';

interface Migration {
  name: string;
  up(db: Knex): Promise<void>;
  down(db: Knex): Promise<void>;
}

// Times are epoch milliseconds in BIGINT columns so MySQL and SQLite store and compare them alike.
const migrations: Migration[] = [
  {
    name: '001_users',
    up: (db) => db.schema.createTable('users', (t) => {
      t.string('id', 36).primary();
      t.string('email', 254).notNullable().unique(); // stored lower-cased: emails compare case-insensitively
      t.string('password_hash', 255).notNullable();
      t.bigInteger('created_at').notNullable();
    }),
    down: (db) => db.schema.dropTable('users'),
  },
  {
    name: '002_jobs',
    up: (db) => db.schema.createTable('jobs', (t) => {
      t.string('id', 32).primary();
      t.string('owner_id', 36).notNullable();
      t.string('owner_email', 254).notNullable();
      t.string('status', 16).notNullable();
      t.string('filename', 255).notNullable();
      t.string('content_type', 127).notNullable();
      t.text('options').notNullable();
      t.string('video_blob_id', 64).nullable();
      t.bigInteger('video_bytes').notNullable();
      t.string('video_sha256', 64).notNullable();
      t.string('mp3_blob_id', 64).nullable();
      t.bigInteger('mp3_bytes').nullable();
      t.double('duration_seconds').nullable();
      t.integer('conversion_ms').nullable();
      t.text('error').nullable();
      t.integer('attempts').notNullable().defaultTo(0);
      t.bigInteger('published_at').nullable();
      t.bigInteger('created_at').notNullable();
      t.bigInteger('updated_at').notNullable();
      t.index(['owner_id', 'created_at'], 'jobs_owner_created');
    }),
    down: (db) => db.schema.dropTable('jobs'),
  },
  {
    name: '003_notifications',
    up: (db) => db.schema.createTable('notifications', (t) => {
      t.string('job_id', 32).notNullable();
      t.string('outcome', 16).notNullable();
      t.string('status', 16).notNullable();
      t.string('recipient', 254).notNullable();
      t.string('message_id', 255).nullable();
      t.text('error').nullable();
      t.bigInteger('created_at').notNullable();
      t.bigInteger('updated_at').notNullable();
      t.primary(['job_id', 'outcome']); // one email per job outcome
    }),
    down: (db) => db.schema.dropTable('notifications'),
  },
];

/** Migrations compiled into the bundle (knex cannot read a migrations folder from an esbuild bundle). */
export const migrationSource: Knex.MigrationSource<Migration> = {
  getMigrations: async () => migrations,
  getMigrationName: (m) => m.name,
  getMigration: async (m) => m,
};
