import http from 'node:http';
import https from 'node:https';
import { parse as parseDisposition } from 'content-disposition';
import { guardedLookup, parseCallbackUrl, PrivateAddressError } from '../core/callback-url';
import type { Config } from '../core/config';
import { BadInputError, TooLargeError } from '../core/errors';

/** Redirects followed before giving up (each hop is checked like the first URL). */
export const maxRedirects = 5;

export interface RemoteFile {
  /** The body as it arrives; destroy it to stop. Fails on the idle or total timeout. */
  body: http.IncomingMessage;
  /** Content-Length when the server sent one. */
  length?: number;
  /** From Content-Disposition, else the last path segment of the final URL. */
  filename: string;
}

type ImportLimits = Config['imports'] & { maxBytes: number };

function filenameOf(res: http.IncomingMessage, url: URL): string {
  try {
    const name = parseDisposition(res.headers['content-disposition'] ?? '').parameters.filename;
    if (name) return name;
  } catch {
    // a malformed header names nothing
  }
  const last = url.pathname.split('/').filter(Boolean).at(-1);
  try {
    return last ? decodeURIComponent(last) : url.hostname;
  } catch {
    return last!;
  }
}

/** Why a request failed, for the user: the host and the reason, never the whole URL (it may carry a secret). */
function describe(err: Error & { code?: string }, url: URL, limits: ImportLimits): string {
  if (err instanceof PrivateAddressError) return `url: ${err.message}; only public addresses can be imported from`;
  if (err.name === 'AbortError' || err.name === 'TimeoutError') return `url: ${url.host} did not finish within ${limits.totalMs / 1000} s`;
  if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') return `url: ${url.hostname} was not found`;
  if (err.code === 'ECONNREFUSED') return `url: ${url.host} refused the connection`;
  return `url: could not download from ${url.host} (${err.code ?? err.message})`;
}

/** One GET: resolves when the response's headers are in. */
function get(url: URL, limits: ImportLimits, signal: AbortSignal): Promise<http.IncomingMessage> {
  const client = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.get(url, {
      headers: { 'user-agent': 'video2mp3-import/1', accept: 'video/*, audio/*, */*;q=0.5', 'accept-encoding': 'identity' },
      lookup: guardedLookup(limits.allowPrivate),
      agent: false,
      signal,
    }, (res) => {
      clearTimeout(connectTimer);
      res.socket.setTimeout(limits.idleMs, () => res.destroy(new BadInputError(`url: ${url.host} sent nothing for ${limits.idleMs / 1000} s`)));
      resolve(res);
    });
    const connectTimer = setTimeout(() => req.destroy(new BadInputError(`url: could not connect to ${url.host} within ${limits.connectMs / 1000} s`)), limits.connectMs);
    req.once('socket', (socket) => socket.setTimeout(limits.idleMs, () => req.destroy(new BadInputError(`url: ${url.host} did not answer within ${limits.idleMs / 1000} s`))));
    req.once('error', (err) => {
      clearTimeout(connectTimer);
      reject(err instanceof BadInputError ? err : new BadInputError(describe(err, url, limits), { cause: err }));
    });
  });
}

/**
 * Opens a file on a web server for streaming: http(s) only, no credentials, redirects followed up to
 * maxRedirects with every hop checked against private addresses (the literal host here, the resolved
 * address at connect time), a 200 required, and a Content-Length over the limit refused at once. The
 * caller owns the body; `signal` (the total timeout) stays attached to it.
 */
export async function openRemoteFile(raw: string, limits: ImportLimits, signal: AbortSignal): Promise<RemoteFile> {
  let url = new URL(parseCallbackUrl(raw, limits, 'url')!);
  for (let hop = 0; ; hop++) {
    const res = await get(url, limits, signal);
    const status = res.statusCode ?? 0;
    if (status >= 300 && status < 400 && res.headers.location) {
      res.resume();
      if (hop === maxRedirects) throw new BadInputError(`url: more than ${maxRedirects} redirects`);
      url = new URL(parseCallbackUrl(new URL(res.headers.location, url).toString(), limits, 'url')!);
      continue;
    }
    if (status !== 200) {
      res.resume();
      throw new BadInputError(`url: ${url.host} answered ${status}${res.statusMessage ? ` ${res.statusMessage}` : ''}`);
    }
    const length = res.headers['content-length'] === undefined ? undefined : Number(res.headers['content-length']);
    if (length !== undefined && length > limits.maxBytes) {
      res.destroy();
      throw new TooLargeError(limits.maxBytes, 'the video');
    }
    return { body: res, length: Number.isFinite(length) ? length : undefined, filename: filenameOf(res, url) };
  }
}
