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
  {
    // The reconciler looks for jobs by state and age on every maintenance tick.
    name: '004_jobs_status_updated',
    up: (db) => db.schema.alterTable('jobs', (t) => { t.index(['status', 'updated_at'], 'jobs_status_updated'); }),
    down: (db) => db.schema.alterTable('jobs', (t) => { t.dropIndex(['status', 'updated_at'], 'jobs_status_updated'); }),
  },
  {
    name: '005_uploads',
    up: async (db) => {
      // Resumable (tus) uploads: who owns one and what it will become. Its bytes live in the blob
      // store under the same id; how many arrived is asked of the store.
      await db.schema.createTable('uploads', (t) => {
        t.string('id', 32).primary(); // also the job's id and the video blob's id once finished
        t.string('owner_id', 36).notNullable();
        t.string('owner_email', 254).notNullable();
        t.bigInteger('size').notNullable();
        t.string('filename', 255).notNullable();
        t.text('metadata').notNullable(); // Upload-Metadata as sent, echoed by HEAD
        t.text('options').notNullable();
        t.string('job_id', 32).nullable();
        t.bigInteger('created_at').notNullable();
        t.bigInteger('expires_at').notNullable();
        t.index(['expires_at'], 'uploads_expires');
      });
      // Leases held across processes (a tus upload is written by one request at a time).
      await db.schema.createTable('locks', (t) => {
        t.string('name', 64).primary();
        t.string('token', 32).notNullable();
        t.bigInteger('expires_at').notNullable();
        t.boolean('release_requested').notNullable().defaultTo(false);
      });
    },
    down: async (db) => {
      await db.schema.dropTable('locks');
      await db.schema.dropTable('uploads');
    },
  },
  {
    // How far a running conversion is, for clients polling the job; written at most about once a second.
    name: '006_job_progress',
    up: (db) => db.schema.alterTable('jobs', (t) => {
      t.integer('progress').nullable();
      t.double('position_seconds').nullable();
    }),
    down: (db) => db.schema.alterTable('jobs', (t) => {
      t.dropColumn('progress');
      t.dropColumn('position_seconds');
    }),
  },
  {
    // Webhooks: where a job's outcome is POSTed, each user's signing secret, one delivery per job.
    name: '007_webhooks',
    up: async (db) => {
      await db.schema.alterTable('jobs', (t) => t.string('callback_url', 2048).nullable());
      await db.schema.alterTable('users', (t) => t.string('webhook_secret', 64).nullable());
      await db.schema.createTable('webhook_deliveries', (t) => {
        t.string('job_id', 32).primary();
        t.string('status', 16).notNullable();
        t.integer('attempts').notNullable().defaultTo(0);
        t.integer('response_status').nullable();
        t.text('error').nullable();
        t.bigInteger('created_at').notNullable();
        t.bigInteger('updated_at').notNullable();
      });
    },
    down: async (db) => {
      await db.schema.dropTable('webhook_deliveries');
      await db.schema.alterTable('users', (t) => t.dropColumn('webhook_secret'));
      await db.schema.alterTable('jobs', (t) => t.dropColumn('callback_url'));
    },
  },
  {
    // The retention sweep looks for done jobs that still hold a source video (a converter stopped
    // before removing it): few rows among many done ones, found without reading them all.
    name: '008_jobs_status_video',
    up: (db) => db.schema.alterTable('jobs', (t) => { t.index(['status', 'video_blob_id'], 'jobs_status_video'); }),
    down: (db) => db.schema.alterTable('jobs', (t) => { t.dropIndex(['status', 'video_blob_id'], 'jobs_status_video'); }),
  },
  {
    // Webhooks leave the mp3 delivery slot: a delivery row is an outbox entry whose next attempt is
    // due at next_attempt_at (a claimed one: when its claim lapses), found by the webhook tick; each
    // attempt is recorded. Rows left pending or sending by the old code are due at once.
    name: '009_webhook_schedule',
    up: async (db) => {
      await db.schema.alterTable('webhook_deliveries', (t) => {
        t.bigInteger('next_attempt_at').nullable();
        t.index(['status', 'next_attempt_at'], 'webhook_deliveries_due');
      });
      await db('webhook_deliveries').whereIn('status', ['pending', 'sending']).update({ next_attempt_at: db.ref('updated_at') });
      await db.schema.createTable('webhook_attempts', (t) => {
        t.string('job_id', 32).notNullable();
        t.integer('attempt').notNullable();
        t.bigInteger('started_at').notNullable();
        t.bigInteger('finished_at').nullable();
        t.integer('response_status').nullable();
        t.text('error').nullable();
        t.primary(['job_id', 'attempt']);
      });
    },
    down: async (db) => {
      await db.schema.dropTable('webhook_attempts');
      await db.schema.alterTable('webhook_deliveries', (t) => {
        t.dropIndex(['status', 'next_attempt_at'], 'webhook_deliveries_due');
        t.dropColumn('next_attempt_at');
      });
    },
  },
  {
    // Fair scheduling (docs/scheduling.md): a job's turn (released_at: published to `video`, counted
    // against MAX_JOBS_IN_FLIGHT), the converter's claim on it (a lease, so a duplicate delivery does
    // not convert it twice and a crashed converter's claim lapses), and one row per owner that every
    // admission or release locks, so quotas are taken in one step on any number of replicas.
    name: '013_job_scheduling',
    up: async (db) => {
      await db.schema.alterTable('jobs', (t) => {
        t.bigInteger('released_at').nullable();
        t.string('claim_token', 32).nullable();
        t.bigInteger('claim_expires_at').nullable();
        t.index(['owner_id', 'status'], 'jobs_owner_status');
      });
      // Jobs queued before this migration had their event published already: their turn has come.
      await db('jobs').whereIn('status', ['queued', 'converting']).update({ released_at: db.ref('updated_at') });
      await db.schema.createTable('owner_queues', (t) => {
        t.string('owner_id', 36).primary();
        t.bigInteger('locked_at').notNullable();
      });
      await db.schema.alterTable('uploads', (t) => { t.index(['owner_id', 'job_id'], 'uploads_owner_job'); });
    },
    down: async (db) => {
      await db.schema.alterTable('uploads', (t) => { t.dropIndex(['owner_id', 'job_id'], 'uploads_owner_job'); });
      await db.schema.dropTable('owner_queues');
      await db.schema.alterTable('jobs', (t) => {
        t.dropIndex(['owner_id', 'status'], 'jobs_owner_status');
        t.dropColumn('released_at');
        t.dropColumn('claim_token');
        t.dropColumn('claim_expires_at');
      });
    },
  },
  {
    // What a done job's MP3 got (loudness measured and applied, cover, chapters, tags), as JSON.
    name: '020_jobs_mp3_details',
    up: (db) => db.schema.alterTable('jobs', (t) => { t.text('mp3_details').nullable(); }),
    down: (db) => db.schema.alterTable('jobs', (t) => { t.dropColumn('mp3_details'); }),
  },
  {
    // Each user's private podcast feed: only a hash of the URL's token is kept (lib/auth/feeds.ts).
    // `etag` and `modified_at` are the feed's last served version, so Last-Modified only moves
    // forward, also when an MP3 leaves the feed (lib/pipeline/feed.ts).
    name: '025_feeds',
    up: (db) => db.schema.createTable('feeds', (t) => {
      t.string('owner_id', 36).primary();
      t.string('token_hash', 64).notNullable().unique();
      t.string('etag', 64).nullable();
      t.bigInteger('modified_at').notNullable();
      t.bigInteger('created_at').notNullable();
    }),
    down: (db) => db.schema.dropTable('feeds'),
  },
  {
    // A job imported from a URL is `importing` while its bytes arrive; how many have arrived so far.
    name: '026_job_imported_bytes',
    up: (db) => db.schema.alterTable('jobs', (t) => { t.bigInteger('imported_bytes').nullable(); }),
    down: (db) => db.schema.alterTable('jobs', (t) => { t.dropColumn('imported_bytes'); }),
  },
];

/** Migrations compiled into the bundle (knex cannot read a migrations folder from an esbuild bundle). */
export const migrationSource: Knex.MigrationSource<Migration> = {
  getMigrations: async () => migrations,
  getMigrationName: (m) => m.name,
  getMigration: async (m) => m,
};
