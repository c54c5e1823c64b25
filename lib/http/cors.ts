import type http from 'node:http';

// What a browser page on another origin needs: the bearer token and tus's request headers in, and the
// headers a tus client and the page read (offsets, Location, the job of a finished upload) out.
const allowMethods = 'GET, HEAD, POST, PATCH, DELETE, OPTIONS';
const allowHeaders = [
  'Authorization', 'Content-Type', 'X-Filename', 'Range', 'If-None-Match',
  'Tus-Resumable', 'Upload-Length', 'Upload-Metadata', 'Upload-Offset', 'Upload-Defer-Length', 'Upload-Concat',
  'X-HTTP-Method-Override', 'X-Requested-With',
].join(', ');
const exposeHeaders = [
  'Location', 'Upload-Offset', 'Upload-Length', 'Upload-Metadata', 'Upload-Expires', 'Tus-Resumable', 'Tus-Version',
  'Tus-Extension', 'Tus-Max-Size', 'Upload-Job-Id', 'Upload-Job-Url', 'Content-Disposition', 'Retry-After',
].join(', ');

/**
 * Applies CORS for the configured web origins. Returns true when the request was a preflight and has
 * been answered. Requests from other origins get no CORS headers, so browsers refuse their answers.
 * No credentials: the page sends its token in Authorization, never a cookie.
 */
export function applyCors(req: http.IncomingMessage, res: http.ServerResponse, origins: readonly string[]): boolean {
  const origin = req.headers.origin;
  res.setHeader('Vary', 'Origin');
  if (!origin || !origins.includes(origin)) return false;
  res.setHeader('Access-Control-Allow-Origin', origin);
  res.setHeader('Access-Control-Expose-Headers', exposeHeaders);
  if (req.method !== 'OPTIONS' || !req.headers['access-control-request-method']) return false;
  res.writeHead(204, {
    'Access-Control-Allow-Methods': allowMethods,
    'Access-Control-Allow-Headers': allowHeaders,
    'Access-Control-Max-Age': '600',
  }).end();
  return true;
}
