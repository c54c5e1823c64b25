// The whole product on one machine: every HTTP function under /<name>/ on one port.
import '../functions/auth';
import { getConfig } from '../lib/config';
import { describeDb, getDb } from '../lib/db';
import { log } from '../lib/log';
import { bodyLimit, createServer, listen, type Mount } from '../lib/serve';

async function main() {
  const config = getConfig();
  const names = ['auth'] as const;
  const mounts: Mount[] = names.map((name) => ({ prefix: `/${name}`, name, bodyLimit: bodyLimit(name, config) }));
  await getDb(); // migrate before taking requests
  const port = await listen(createServer(mounts), config.port);
  log.info({
    url: config.publicUrl,
    functions: names.map((n) => `${config.publicUrl}/${n}/`),
    database: describeDb(config),
    dataDir: config.dataDir,
  }, `video2mp3 listening on port ${port}`);
}

main().catch((err: unknown) => {
  log.fatal({ err }, 'start failed');
  process.exit(1);
});
