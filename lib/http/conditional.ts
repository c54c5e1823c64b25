import type { Request } from 'express';

/**
 * True when the client's copy is current (RFC 9110 §13.2.2): If-None-Match when sent, else
 * If-Modified-Since, whole seconds. Unlike express's `req.fresh` this ignores a request's
 * `Cache-Control: no-cache`, which is a cache's concern, not the origin's: fetch clients send it with
 * every conditional request they make by hand.
 */
export function isNotModified(req: Request, etag: string, lastModified: Date): boolean {
  const ifNoneMatch = req.get('if-none-match');
  if (ifNoneMatch) return ifNoneMatch.trim() === '*' || ifNoneMatch.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
  const since = Date.parse(req.get('if-modified-since') ?? '');
  return Number.isFinite(since) && Math.floor(lastModified.getTime() / 1000) * 1000 <= since;
}
