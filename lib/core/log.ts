import fs from 'node:fs';
import Module from 'node:module';
import path from 'node:path';
import { pino, type DestinationStream, type Logger } from 'pino';
import { traceFields } from './tracing';

// Where lines go: stdout, unless a person's terminal asked for pretty lines (useLogDestination).
let destination: DestinationStream = pino.destination({ dest: 1, sync: true });

let bundleMap: Module.SourceMap | null | undefined;

/**
 * The source map of the bundle this code runs in (dist/<function>/function.js, started from its code
 * cache by scripts/bundle-loader.cjs), when node runs with --enable-source-maps as the images do; null
 * otherwise (TypeScript through tsx, whose stacks node maps itself). Read at the first error logged: the
 * map is ~10 MB, read and decoded in ~0.4 s on a slow VM. Node maps the frames of the files it requires,
 * but not those of code compiled with vm.Script, as the cached bundle is; and a stack formatter that
 * mapped every stack (Error.prepareStackTrace) read the map at every cold start, because node's domain
 * module, which the framework requires, formats a stack as it loads, and again for each malformed JSON
 * body a client sent (body-parser rewrites its error's stack).
 */
function loadBundleMap(): Module.SourceMap | null {
  if (bundleMap !== undefined) return bundleMap;
  bundleMap = null;
  if (process.sourceMapsEnabled && path.basename(__filename) === 'function.js') {
    try {
      bundleMap = new Module.SourceMap(JSON.parse(fs.readFileSync(`${__filename}.map`, 'utf8')));
    } catch {
      // No map shipped: frames stay as they are.
    }
  }
  return bundleMap;
}

/** The loader compiles the bundle inside the CommonJS wrapper, whose head sits before its first line. */
const wrapperColumns = Module.wrap('').indexOf('\n');

/** The bundle's frames in `stack` (V8 names the path the code cache was made at), pointed at their TypeScript. */
function mapBundleStack(stack: string): string {
  if (!stack.includes('function.js:')) return stack;
  const map = loadBundleMap();
  if (!map) return stack;
  return stack.replace(/[^\s(]*function\.js:(\d+):(\d+)/g, (frame, lineText: string, columnText: string) => {
    const line = Number(lineText) - 1;
    const entry = map.findEntry(line, Number(columnText) - 1 - (line === 0 ? wrapperColumns : 0));
    if (!('originalSource' in entry)) return frame;
    const source = path.resolve(path.dirname(__filename), entry.originalSource.replace(/^file:\/\//, ''));
    return `${source}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
  });
}

/** pino's error serializer, with the bundle's frames mapped (mapBundleStack). */
function serializeError(err: Error): ReturnType<typeof pino.stdSerializers.err> {
  const serialized = pino.stdSerializers.err(err);
  if (typeof serialized?.stack === 'string') serialized.stack = mapBundleStack(serialized.stack);
  return serialized;
}

/**
 * A URL as the logs may show it: the secrets some URLs carry — a signed download link's token
 * (`…/links/<token>`), a private feed's (`…/feed/<token>`), a token in the query (`access_token=`,
 * `token=`) — replaced, since they work for anyone who reads them.
 */
export function redactUrl(url: unknown): unknown {
  if (typeof url !== 'string') return url;
  return url.replace(/(\/(?:links|feed)\/)[^/?#]+/g, '$1[redacted]').replace(/([?&](?:access_token|token)=)[^&#]*/gi, '$1[redacted]');
}

/**
 * Structured JSON lines on stdout. The level and the service name come from the configuration once
 * it is parsed (configureLog); until then, `info`. A line written inside a traced span carries its
 * traceId and spanId.
 */
export const log: Logger = pino({
  level: 'info',
  base: { service: 'video2mp3' },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label) => ({ level: label }) },
  serializers: { err: serializeError, url: redactUrl },
  mixin: traceFields,
  redact: { paths: ['password', '*.password', 'authorization', '*.authorization', 'token', '*.token'], censor: '[redacted]' },
}, { write: (line: string) => destination.write(line) });

/** Sends the JSON lines to another stream (`npm start` on a terminal: pino-pretty). */
export function useLogDestination(stream: DestinationStream): void {
  destination = stream;
}

export function configureLog(settings: { logLevel: string; service?: string }): void {
  log.level = settings.logLevel;
  if (settings.service) log.setBindings({ service: settings.service });
}
