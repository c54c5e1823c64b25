/**
 * lib/http owns the HTTP edge: serving functions through functions-framework, routing helpers,
 * request parsing, and the one mapping from domain errors to responses (errors.ts).
 */
import * as ff from '@google-cloud/functions-framework';
import { getTestServer } from '@google-cloud/functions-framework/testing';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { closeClients } from '../core/clients';
import { loadConfig, setConfig, type Config, type FunctionName } from '../core/config';
import { BadInputError, EventTooLargeError, LengthRequiredError, NotFoundError, RequestTimeoutError, TooLargeError, UnsupportedMediaError } from '../core/errors';
import { log } from '../core/log';
import { httpRequestDuration, serveMetrics } from '../core/metrics';
import { serverSpan, startTracing } from '../core/tracing';
import { applyCors } from './cors';
import { toErrorResponse, writeError } from './errors';
import { errorMiddleware } from './router';
import { listStaticFiles, serveStatic, type StaticFiles } from './static';

export interface Mount {
  /** Path prefix, '' to serve at the root (deployed), '/auth' on the local stack. */
  prefix: string;
  name: FunctionName;
  handler: ff.HttpFunction;
  /** Bodies larger than this are refused before anything is buffered. */
  bodyLimit: number;
}

type Listener = http.RequestListener & { use(fn: unknown): void; set(name: string, value: unknown): void };

export type ServeOptions = Pick<Config, 'timeouts' | 'trustProxy' | 'webOrigins' | 'authUrl' | 'uploadUrl' | 'downloadUrl'>;

/** Requests answered 408: their answer is not held back for a body that stopped arriving. */
const timedOut = new WeakSet<http.IncomingMessage>();

/**
 * A request whose body has not fully arrived in time is answered 408 and its connection closed. The
 * upload function takes long bodies (a large video over a slow link), so there the limit is on idle
 * time between bytes rather than on the whole request; and only on the client's idle time: while the
 * body waits unread in the request's buffer (the store it goes to is slow), the socket is quiet
 * because the server paused it, and the client is not to blame.
 */
function limitRequestTime(req: http.IncomingMessage, res: http.ServerResponse, idle: boolean, ms: number): void {
  const expire = () => {
    if (idle && req.complete) {
      req.socket.setTimeout(0); // all of it arrived; the answer may take its time (sealing a big upload)
      return;
    }
    if (req.complete) return;
    if (idle && req.readableLength > 0) {
      req.socket.setTimeout(ms); // our backpressure, not the client: wait another period
      return;
    }
    timedOut.add(req); // answer now: the rest of this body is not coming (see endAfterBody)
    log.info({ method: req.method, url: req.url, idle }, 'request timed out');
    res.setHeader('Connection', 'close');
    if (res.headersSent) res.destroy();
    else writeError(req, res, new RequestTimeoutError());
    res.once('finish', () => req.socket.destroy());
  };
  if (idle) {
    // On the response: node's server asks it about a socket timeout even once the request is complete
    // (a listener on the request is asked only before), and destroys a socket nobody claims.
    res.setTimeout(ms, expire);
    res.once('close', () => req.socket.setTimeout(0));
    return;
  }
  const timer = setTimeout(expire, ms);
  res.once('close', () => clearTimeout(timer));
}

/**
 * Errors of a connection before a request exists (headers too slow, malformed HTTP, too many header
 * bytes) get the same JSON error body as everything else, written straight to the socket.
 */
function onClientError(err: NodeJS.ErrnoException, socket: import('node:stream').Duplex): void {
  const error = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? new RequestTimeoutError()
    : err.code === 'HPE_HEADER_OVERFLOW' ? new TooLargeError(16 * 1024, 'the request headers')
      : new BadInputError('the request is not valid HTTP');
  const { status, body } = toErrorResponse(error);
  const text = JSON.stringify(body);
  if (socket.writable && (socket as { bytesWritten?: number }).bytesWritten === 0) {
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n` +
      `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
  }
  socket.destroy();
}

/** Request bodies a streaming route may still send after it has been answered: read and dropped, then the socket is closed. */
const drainLimitBytes = 16 * 1024 * 1024;
/** A multipart body is the file plus its framing and option fields; the handler counts the file's bytes exactly. */
const multipartFramingBytes = 1024 * 1024;
const hiddenFraming = Symbol('hiddenFraming');
const prefixOf = Symbol('mountPrefix');

/** The path prefix the request's function is served under ('' when deployed, '/upload' on the local stack). */
export const mountPrefix = (req: http.IncomingMessage): string => (req as http.IncomingMessage & { [prefixOf]?: string })[prefixOf] ?? '';
type FramedRequest = http.IncomingMessage & { [hiddenFraming]?: { 'content-length'?: string; 'transfer-encoding'?: string } };

/**
 * Whether this request's body is streamed by its handler instead of buffered by the framework:
 * upload's POST (single-request uploads and tus creation-with-upload) and PATCH (tus).
 */
export function streamsBody(name: FunctionName, method = ''): boolean {
  return name === 'upload' && (method === 'POST' || method === 'PATCH');
}

/**
 * functions-framework runs body-parser over every request before the handler, buffering the whole
 * body (up to 1 GiB) in memory. For streaming routes the body is hidden from it: body-parser (via
 * type-is `hasBody`) only reads a body whose request has Content-Length or Transfer-Encoding, so both
 * are moved off `req.headers` here and put back just before the handler runs. Node's HTTP parser
 * already knows the framing from the raw headers, so the body still arrives on the request stream.
 */
function hideBody(req: FramedRequest): void {
  const { 'content-length': length, 'transfer-encoding': encoding } = req.headers;
  req[hiddenFraming] = { 'content-length': length, 'transfer-encoding': encoding };
  delete req.headers['content-length'];
  delete req.headers['transfer-encoding'];
}

/**
 * The framework runs each handler inside a `domain` (to answer 500 to an error thrown in a callback).
 * While one is active, node's domain async hook tags every promise and callback made, and re-enters
 * the domain around each one: measured on a tus PATCH, that was ~20 % of the process's CPU, as much as
 * hashing the bytes. A streaming handler leaves the domain before it starts; its errors are promise
 * rejections that the router maps to answers (router.ts), which is all the domain would catch for it.
 */
function leaveDomain(): void {
  (process as { domain?: { exit(): void } | null }).domain?.exit();
}

function restoreBody(req: FramedRequest): void {
  const hidden = req[hiddenFraming];
  if (!hidden) return;
  for (const [name, value] of Object.entries(hidden)) if (value !== undefined) req.headers[name] = value;
  delete req[hiddenFraming];
}

/**
 * A streaming route may answer before the body has all arrived (a 413 or 400 part-way). Closing the
 * socket then, under a client that is still sending, resets the connection and discards the answer
 * before Node fetch, curl or a browser reads it; and keeping the connection for another request would
 * mean reading the rest anyway. So the answer's end waits while the rest of the body is read and
 * dropped, up to drainLimitBytes, and the connection is closed after it. A client that sends more than
 * that is cut off.
 */
function endAfterBody(req: http.IncomingMessage, res: http.ServerResponse): void {
  const end = res.end.bind(res) as (...args: unknown[]) => http.ServerResponse;
  res.end = ((...args: unknown[]) => {
    if (req.complete || req.destroyed || timedOut.has(req)) return end(...args);
    if (!res.headersSent) res.setHeader('Connection', 'close');
    let drained = 0;
    let ended = false;
    const finish = () => {
      if (ended) return;
      ended = true;
      end(...args);
    };
    // Whoever was reading (busboy, an async iterator's 'readable' listener) lets go; this reads on.
    req.unpipe();
    req.removeAllListeners('data');
    req.removeAllListeners('readable');
    req.on('data', (chunk: Buffer) => {
      drained += chunk.length;
      if (drained > drainLimitBytes) {
        finish();
        res.once('finish', () => req.socket.destroy());
      }
    });
    req.once('end', finish);
    req.once('close', finish);
    req.resume();
    return res;
  }) as typeof res.end;
}

const methods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
/** The framework's own catch-all route, which every function's handler hangs from. */
const frameworkRoute = '/{*splat}';

/**
 * Times the request into video2mp3_http_request_duration_seconds and traces it (a server span that
 * continues the trace the request carries), labelled by the express route pattern that answered it,
 * never the raw path (ids would make a series each). '*': no route of the function matched (a 404,
 * or notify, which has none); '(none)': answered before the function ran (413, 415, 411).
 */
function observeRequest(req: http.IncomingMessage, res: http.ServerResponse, name: FunctionName, run: () => void): void {
  const end = httpRequestDuration.startTimer();
  const method = methods.has(req.method ?? '') ? req.method! : 'OTHER';
  serverSpan(req, res, `${name} ${method}`, (done) => {
    res.once('close', () => {
      const pattern = (req as http.IncomingMessage & { route?: { path?: unknown } }).route?.path;
      const route = Array.isArray(pattern) ? pattern.join(',') : pattern === frameworkRoute ? '*' : typeof pattern === 'string' ? pattern : '(none)';
      const status = res.headersSent ? res.statusCode : 0; // 0: the connection closed before an answer
      end({ function: name, route, method, status: String(status) });
      done(`${name} ${method} ${route}`, { 'faas.name': name, 'http.request.method': method, 'http.route': route, 'http.response.status_code': status }, status === 0 || status >= 500);
    });
    run();
  });
}

/**
 * The web page's own scripts and styles only (no inline code, nothing from elsewhere), API calls to
 * the functions' origins only, covers and MP3s the page fetched itself (blob: URLs, web/extras.ts), and never inside another site's frame (clickjacking): frame-ancestors
 * for current browsers, X-Frame-Options for older ones.
 */
export function pageSecurityHeaders(opts: Pick<Config, 'authUrl' | 'uploadUrl' | 'downloadUrl'>): Record<string, string> {
  const origins = [...new Set([opts.authUrl, opts.uploadUrl, opts.downloadUrl].map((u) => new URL(u).origin))];
  const policy = [
    "default-src 'self'", `connect-src 'self' ${origins.join(' ')}`, "img-src 'self' data: blob:", "media-src 'self' blob:", "object-src 'none'",
    "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
  ];
  return { 'Content-Security-Policy': policy.join('; '), 'X-Frame-Options': 'DENY' };
}

/**
 * An HTTP server for functions, each on its prefix. Each handler is registered with
 * functions-framework and served by the framework's own express app; `getServer` is not exported
 * by the package, and `getTestServer` is the exported way to get that app for a registered function
 * (the CLI entry would own the listening socket, leaving no place to refuse oversized bodies before
 * the framework buffers them). The framework buffers whole bodies (up to 1 GiB) before a handler
 * runs, so the size limit is enforced here, from Content-Length, first; streaming routes' bodies are
 * hidden from it (hideBody) and their handlers enforce the limit as the bytes arrive.
 */
export function createServer(mounts: Mount[], opts: ServeOptions & { files?: StaticFiles }): http.Server {
  const routes = mounts
    .map((m) => {
      ff.http(m.name, (req, res) => {
        if (streamsBody(m.name, req.method)) leaveDomain();
        restoreBody(req);
        return m.handler(req, res);
      });
      const app = getTestServer(m.name).listeners('request')[0] as Listener;
      app.set('trust proxy', opts.trustProxy);
      app.use(errorMiddleware);
      return { ...m, app };
    })
    .sort((a, b) => b.prefix.length - a.prefix.length);

  // Node's own whole-request timeout is off (it would cut long uploads); limitRequestTime does it per
  // route. Headers must still arrive within headersMs, checked every second.
  const pageHeaders = opts.files && pageSecurityHeaders(opts);
  const server = http.createServer({ requestTimeout: 0, headersTimeout: opts.timeouts.headersMs, connectionsCheckingInterval: 1000 }, (req, res) => {
    const url = req.url ?? '/';
    // Every answer's Content-Type is meant: a browser must not guess another (a JSON error read as HTML).
    res.setHeader('X-Content-Type-Options', 'nosniff');
    if (url === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    if (applyCors(req, res, opts.webOrigins)) return;
    // The page's few fixed paths never collide with a function's routes (deployed, download has /jobs and /links).
    if (opts.files && serveStatic(req, res, opts.files, pageHeaders)) return;
    const route = routes.find((r) => url === r.prefix || url.startsWith(`${r.prefix}/`) || url.startsWith(`${r.prefix}?`));
    if (!route) return writeError(req, res, new NotFoundError('function'));
    observeRequest(req, res, route.name, () => dispatch(req, res, route, url));
  });
  const dispatch = (req: http.IncomingMessage, res: http.ServerResponse, route: (typeof routes)[number], url: string) => {
    // body-parser would inflate a compressed body past any limit checked here: refuse it.
    const encoding = req.headers['content-encoding'];
    if (encoding && encoding.toLowerCase() !== 'identity') {
      res.setHeader('Connection', 'close');
      return writeError(req, res, new UnsupportedMediaError('compressed request bodies (Content-Encoding) are not accepted'));
    }
    const streaming = streamsBody(route.name, req.method);
    const length = req.headers['content-length'];
    if (length === undefined && req.headers['transfer-encoding'] && !streaming) return writeError(req, res, new LengthRequiredError());
    if (Number(length) > route.bodyLimit + (streaming ? multipartFramingBytes : 0)) {
      if (streaming) endAfterBody(req, res);
      else res.setHeader('Connection', 'close'); // don't read a small route's body we refuse
      return writeError(req, res, eventFunctions.includes(route.name) ? new EventTooLargeError(route.bodyLimit) : new TooLargeError(route.bodyLimit));
    }
    limitRequestTime(req, res, route.name === 'upload', opts.timeouts.requestMs);
    (req as http.IncomingMessage & { [prefixOf]?: string })[prefixOf] = route.prefix;
    req.url = url.slice(route.prefix.length) || '/';
    if (req.url.startsWith('?')) req.url = `/${req.url}`;
    if (streaming) {
      hideBody(req);
      endAfterBody(req, res);
    }
    route.app(req, res);
  };
  server.on('clientError', onClientError);
  return server;
}

/** Listens, and on SIGTERM/SIGINT stops taking requests, finishes the ones in flight, closes clients. */
export function listen(server: http.Server, config: Pick<Config, 'port' | 'host' | 'timeouts'>, onClose?: () => Promise<void>): Promise<number> {
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
    setTimeout(() => process.exit(0), config.timeouts.shutdownMs).unref();
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : config.port);
    });
  });
}

/**
 * Listens on a free loopback port: `npm start`'s event receivers (convert, notify) are reachable only
 * from this machine, never on the public listener. Resolves to the port.
 */
export function listenInternal(server: http.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
  });
}

/** Functions that receive events: on one machine they are served only on the loopback listener. */
export const eventFunctions: readonly FunctionName[] = ['convert', 'notify'];

/** How large a request body each function accepts. */
export function bodyLimit(name: FunctionName, config: Pick<Config, 'limits'>): number {
  if (name === 'upload') return config.limits.uploadBytes;
  if (name === 'convert' || name === 'notify') return 1024 * 1024;
  return 64 * 1024;
}

/**
 * On Knative the download function also serves the web page (its bundle carries it in web/), with a
 * config.js naming the functions' URLs: auth and upload are other origins, which WEB_ORIGIN lets in.
 */
function deployedPage(name: FunctionName, config: Readonly<Config>): StaticFiles | undefined {
  const dir = path.join(__dirname, 'web');
  if (name !== 'download' || !fs.existsSync(path.join(dir, 'index.html'))) return undefined;
  const urls = { auth: config.authUrl, upload: config.uploadUrl, download: config.downloadUrl };
  return listStaticFiles(dir, { '/config.js': { text: `window.video2mp3Config = ${JSON.stringify(urls)};\n`, type: 'text/javascript; charset=utf-8' } });
}

/**
 * The entry of a deployed function's bundle: parse configuration, register the handler, serve it at the
 * root, then run the function's `warmUp` (if it has one) so the first request pays no start-up.
 */
export async function serveFunction(name: FunctionName, handler: ff.HttpFunction, warmUp?: () => Promise<void>): Promise<void> {
  // An error nothing catches ends the process, as node's default does, but as a JSON line whose stack
  // names the TypeScript (lib/core/log.ts maps the bundle's frames) instead of node's plain print.
  process.on('uncaughtException', (err, origin) => {
    log.fatal({ err, origin }, 'uncaught exception; exiting');
    process.exit(1);
  });
  try {
    const config = loadConfig(process.env, name);
    setConfig(config);
    if (config.otlpEndpoint) await startTracing({ endpoint: config.otlpEndpoint, service: config.service ?? name });
    const metrics = await serveMetrics(config);
    const server = createServer([{ prefix: '', name, handler, bodyLimit: bodyLimit(name, config) }], { ...config, files: deployedPage(name, config) });
    const port = await listen(server, config);
    log.info({ function: name, port, metrics, tracing: config.otlpEndpoint ?? 'off' }, 'function listening');
    await warmUp?.();
  } catch (err) {
    log.fatal({ err }, 'function failed to start');
    process.exit(1);
  }
}
