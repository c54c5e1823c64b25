// The whole product on one machine: every function under /<name>/ on one port, plus the local
// stand-in for the Knative RabbitMQ sources feeding convert and notify. Embedded backends unless
// DATABASE_URL, MONGODB_URI, AMQP_URL or SMTP_URL say otherwise.
import path from 'node:path';
import { handlers } from '../functions/all';
import { describeBlobs } from '../lib/storage/blobs';
import { functionNames, getConfig } from '../lib/core/config';
import { describeDb, getDb } from '../lib/storage/db';
import { log } from '../lib/core/log';
import { describeBroker, getBroker } from '../lib/messaging/queue';
import { bodyLimit, createServer, listen } from '../lib/http/serve';
import { startPipelineSources } from '../lib/messaging/source';

async function main() {
  const config = getConfig();
  await getDb(); // migrate before taking requests
  const server = createServer(functionNames.map((name) => ({ prefix: `/${name}`, name, handler: handlers[name], bodyLimit: bodyLimit(name, config) })));
  let sources: { stop(): Promise<void> }[] = [];
  const port = await listen(server, config, async () => {
    await Promise.all(sources.map((s) => s.stop()));
  });
  sources = await startPipelineSources(await getBroker(), `http://127.0.0.1:${port}`, config);
  log.info({
    functions: Object.fromEntries(functionNames.map((n) => [n, `${config.publicUrl}/${n}/`])),
    database: describeDb(config),
    storage: describeBlobs(config),
    queue: describeBroker(config),
    mail: config.smtpUrl ? `smtp ${new URL(config.smtpUrl).host}` : `outbox ${path.join(config.dataDir, 'outbox')}`,
  }, `video2mp3 is up at ${config.publicUrl}`);
}

main().catch((err: unknown) => {
  log.fatal({ err }, 'start failed');
  process.exit(1);
});
