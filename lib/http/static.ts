import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';

const types: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
};

/** URL path → file on disk (or generated text): a fixed list, so no request path reaches the file system. */
export type StaticFiles = ReadonlyMap<string, string | { text: string; type: string }>;

/** The files directly inside `dir` (the built web page), `index.html` also at `/`; none if it is missing. */
export function listStaticFiles(dir: string, extra: Record<string, string | { text: string; type: string }> = {}): StaticFiles {
  const files = new Map<string, string | { text: string; type: string }>();
  const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => fs.statSync(path.join(dir, n)).isFile()) : [];
  for (const name of names) files.set(`/${name}`, path.join(dir, name));
  if (files.has('/index.html')) files.set('/', files.get('/index.html')!);
  for (const [url, file] of Object.entries(extra)) files.set(url, file);
  return files;
}

/** Serves a listed file for GET/HEAD, with `headers` besides its own; false when the path is not one of them. */
export function serveStatic(req: http.IncomingMessage, res: http.ServerResponse, files: StaticFiles, headers: Record<string, string> = {}): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const file = files.get(new URL(req.url ?? '/', 'http://x').pathname);
  if (!file) return false;
  const generated = typeof file === 'string' ? undefined : file;
  res.writeHead(200, {
    ...headers,
    'Content-Type': generated?.type ?? types[path.extname(file as string)] ?? 'application/octet-stream',
    'Cache-Control': 'no-cache',
    'X-Content-Type-Options': 'nosniff',
  });
  if (req.method === 'HEAD') res.end();
  else if (generated) res.end(generated.text);
  else fs.createReadStream(file as string).on('error', () => res.destroy()).pipe(res);
  return true;
}
