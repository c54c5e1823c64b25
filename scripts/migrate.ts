// `npm run migrate`: brings the database (DATABASE_URL, or the embedded SQLite file) up to date.
// Functions also migrate when they start; this is for operators who prefer to do it first.
import { getConfig } from '../lib/core/config';
import { createDb, describeDb, migrate } from '../lib/storage/db';
import { log } from '../lib/core/log';

async function main() {
  const config = getConfig();
  const db = createDb(config);
  try {
    const applied = await migrate(db);
    log.info({ database: describeDb(config), applied }, applied.length ? 'migrations applied' : 'database already up to date');
  } finally {
    await db.destroy();
  }
}

main().catch((err: unknown) => {
  log.fatal({ err }, 'migration failed');
  process.exit(1);
});
