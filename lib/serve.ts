import { getTestServer } from '@google-cloud/functions-framework/testing';
import http from 'node:http';
import { getConfig, loadConfig, setConfig, type Config, type FunctionName } from './config';
import { closeClients } from './clients';
import { lengthRequired, notFound, toErrorResponse, tooLarge, unsupportedMedia } from './errors';
import { errorMiddleware } from './http';
import { applyCors } from './http/cors';
import { serveStatic, type StaticFiles } from './http/static';
import { log } from './log';

export interface Mount {
  /** Path prefix, '' to serve at the root (deployed), '/auth' on the local stack. */
  prefix: string;
  name: FunctionName;
  /** Bodies larger than this are refused before anything is buffered. */
  bodyLimit: number;
}

type Listener = http.RequestListener & { use(fn: unknown): void };

function reply(res: http.ServerResponse, err: unknown) {
  const { status, headers, body } = toErrorResponse(err);
  res.writeHead(status, { ...headers, 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}

/**
 * An HTTP server for registered functions, each on its prefix, through functions-framework's own
 * server (the same code path as the framework's CLI). The framework buffers whole bodies (up to
 * 1 GiB) before a handler runs, so the size limit is enforced here, from Content-Length, first.
 */
export function createServer(mounts: Mount[], opts: { files?: StaticFiles } = {}): http.Server {
  const routes = mounts
    .map((m) => {
      const app = getTestServer(m.name).listeners('request')[0] as Listener;
      app.use(errorMiddleware);
      return { ...m, app };
    })
    .sort((a, b) => b.prefix.length - a.prefix.length);

  return http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    if (applyCors(req, res, getConfig().webOrigins)) return;
    const route = routes.find((r) => url === r.prefix || url.startsWith(`${r.prefix}/`) || url.startsWith(`${r.prefix}?`));
    if (!route && opts.files && serveStatic(req, res, opts.files)) return;
    if (!route) {
      reply(res, notFound('function'));
      return;
    }
    // body-parser would inflate a compressed body past any limit checked here: refuse it.
    const encoding = req.headers['content-encoding'];
    if (encoding && encoding.toLowerCase() !== 'identity') {
      res.setHeader('Connection', 'close');
      return reply(res, unsupportedMedia('compressed request bodies (Content-Encoding) are not accepted'));
    }
    const length = req.headers['content-length'];
    if (length === undefined && req.headers['transfer-encoding']) return reply(res, lengthRequired());
    if (Number(length) > route.bodyLimit) {
      res.setHeader('Connection', 'close'); // don't read a body we refuse
      return reply(res, tooLarge(route.bodyLimit));
    }
    req.url = url.slice(route.prefix.length) || '/';
    if (req.url.startsWith('?')) req.url = `/${req.url}`;
    route.app(req, res);
  });
}

/** Listens, and on SIGTERM/SIGINT stops taking requests, finishes the ones in flight, closes clients. */
export function listen(server: http.Server, port: number, onClose?: () => Promise<void>): Promise<number> {
  const shutdown = (signal: string) => {
    log.info({ signal }, 'shutting down');
    server.close(() => {
      void (async () => {
        await onClose?.();
        await closeClients();
        process.exit(0);
      })();
    });
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 30_000).unref();
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => {
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}

/** How large a request body each function accepts. */
export function bodyLimit(name: FunctionName, config: Pick<Config, 'limits'>): number {
  if (name === 'upload') return config.limits.uploadBytes + 1024 * 1024; // room for multipart framing
  if (name === 'convert' || name === 'notify') return 1024 * 1024;
  return 64 * 1024;
}

/** The entry of a deployed function's bundle: parse configuration, then serve it at the root. */
export async function serveFunction(name: FunctionName): Promise<void> {
  try {
    const config = loadConfig(process.env, name);
    setConfig(config);
    const port = await listen(createServer([{ prefix: '', name, bodyLimit: bodyLimit(name, config) }]), config.port);
    log.info({ function: name, port }, 'function listening');
  } catch (err) {
    log.fatal({ err }, 'function failed to start');
    process.exit(1);
  }
}
