// The whole product on one machine: auth, upload and download under /<name>/ on PORT (bound to HOST,
// loopback by default), convert and notify on a loopback-only port of their own fed by the local
// stand-in for the Knative RabbitMQ sources: events are not taken from the public listener.
// Embedded backends unless DATABASE_URL, MONGODB_URI, AMQP_URL or SMTP_URL say otherwise.
import path from 'node:path';
import { bundleWeb } from '../web/bundle.mjs';
import { handlers } from '../functions/all';
import { warmUp } from '../functions/convert';
import { describeBlobs } from '../lib/storage/blobs';
import { functionNames, getConfig } from '../lib/core/config';
import { describeDb, getDb } from '../lib/storage/db';
import { log, useLogDestination } from '../lib/core/log';
import { serveMetrics } from '../lib/core/metrics';
import { startTracing } from '../lib/core/tracing';
import { describeBroker, getBroker } from '../lib/messaging/queue';
import { bodyLimit, createServer, eventFunctions, listen, listenInternal } from '../lib/http/serve';
import { listStaticFiles } from '../lib/http/static';
import { startPipelineSources } from '../lib/messaging/source';
import { startPing } from '../lib/messaging/ping';
import { reconcile } from '../lib/pipeline/reconcile';

const root = path.resolve(__dirname, '..');

async function main() {
  // A person at a terminal reads coloured lines; anything else (a pipe, a log collector) gets JSON.
  if (process.stdout.isTTY) {
    const { default: pretty } = await import('pino-pretty');
    useLogDestination(pretty({ colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname,service' }));
  }
  const config = getConfig();
  if (config.otlpEndpoint) await startTracing({ endpoint: config.otlpEndpoint, service: 'video2mp3' });
  const db = await getDb(); // migrate before taking requests
  if (!config.amqpUrl) {
    // The in-process queue died with the previous run: rebuild it from the jobs before serving.
    await reconcile({ db, broker: await getBroker(), config }, { restarted: true });
  }
  // The web page at / and the API description at /openapi.json, beside the functions.
  const web = path.join(config.dataDir, 'web');
  await bundleWeb(web);
  const files = listStaticFiles(web, { '/openapi.json': path.join(root, 'docs/openapi.json') });
  const mount = (name: (typeof functionNames)[number]) => ({ prefix: `/${name}`, name, handler: handlers[name], bodyLimit: bodyLimit(name, config) });
  const publicNames = functionNames.filter((n) => !eventFunctions.includes(n));
  const server = createServer(publicNames.map(mount), { ...config, files });
  const internal = createServer(eventFunctions.map(mount), config);
  const internalPort = await listenInternal(internal);
  let sources: { stop(): Promise<void> }[] = [];
  await listen(server, config, async () => {
    await Promise.all(sources.map((s) => s.stop()));
    await new Promise((resolve) => internal.close(resolve));
  });
  const internalUrl = `http://127.0.0.1:${internalPort}`;
  const metrics = await serveMetrics(config);
  sources = [
    ...await startPipelineSources(await getBroker(), internalUrl, config),
    startPing({ sink: `${internalUrl}/convert/maintenance`, intervalMs: config.maintenance.intervalMs }),
    startPing({ sink: `${internalUrl}/notify/webhooks`, intervalMs: config.webhooks.tickMs }),
  ];
  if (process.env.npm_lifecycle_event === 'start') stopWithParent();
  log.info({
    functions: Object.fromEntries(publicNames.map((n) => [n, `${config.publicUrl}/${n}/`])),
    listen: `${config.host}:${config.port}`,
    eventReceivers: `http://127.0.0.1:${internalPort} (loopback only)`,
    database: describeDb(config),
    storage: describeBlobs(config),
    queue: describeBroker(config),
    mail: config.smtpUrl ? `smtp ${new URL(config.smtpUrl).host}` : `outbox ${path.join(config.dataDir, 'outbox')}`,
    web: `${config.publicUrl}/`,
    openapi: `${config.publicUrl}/openapi.json`,
    metrics: metrics ?? 'off (METRICS_PORT is taken)',
    traces: config.otlpEndpoint ?? 'off (set OTEL_EXPORTER_OTLP_ENDPOINT)',
  }, `video2mp3 is up at ${config.publicUrl}`);
  await warmUp(); // the converter's instances, ready before the first upload arrives
}

/**
 * `npm start` runs this file as npm's only child (node with tsx as a loader, no shell or tsx process
 * in between), and npm forwards SIGTERM/SIGINT to it. A `kill -9` of npm forwards nothing: the stack
 * notices that its parent is gone and shuts down as on SIGTERM, so the port is free for the next start.
 */
function stopWithParent() {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) {
      log.warn({ parent }, 'the process that started the stack is gone; shutting down');
      process.kill(process.pid, 'SIGTERM');
    }
  }, 500).unref();
}

main().catch((err: unknown) => {
  log.fatal({ err }, 'start failed');
  process.exit(1);
});
