import type http from 'node:http';
import { getConfig } from '../core/config';
import { BadInputError, DomainError, isTransient } from '../core/errors';
import { log } from '../core/log';
import { createDbLocker, finishedJobId, newUploadId, parseUploadMetadata, ResumableStore, type Owner, type ResumableDeps } from '../pipeline/resumable';
import { checkQuotas } from '../pipeline/scheduling';
import { toErrorResponse } from './errors';
import { mountPrefix } from './serve';

/**
 * The request as a web Request for @tus/server, its body pulled from the socket only as fast as the
 * store takes it (highWaterMark 0). Node's own Readable.toWeb, which @tus/server's `handle` uses,
 * queues up to highWaterMark *chunks* ahead of the reader: a fast client then fills memory with a
 * PATCH's bytes that storage has not taken yet.
 */
function toWebRequest(req: http.IncomingMessage): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(', ') : value);
  }
  const method = req.method ?? 'GET';
  const hasBody = method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS';
  const chunks = req[Symbol.asyncIterator]();
  const body = hasBody
    ? new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const next = await chunks.next();
          if (next.done) controller.close();
          else controller.enqueue(next.value as Buffer);
        } catch (err) {
          controller.error(err);
        }
      },
      // On cancel (a refused or cut PATCH) the request is left as it is: not destroyed, so the answer
      // can still be written; lib/http/serve.ts reads and drops what is left of the body.
    }, { highWaterMark: 0 })
    : undefined;
  return new Request(`http://${req.headers.host ?? 'localhost'}${req.url ?? '/'}`, { method, headers, body, duplex: 'half' } as RequestInit);
}

/** The answer to every tus error: the project's JSON error body, whatever raised it. */
function tusError(req: Request, err: unknown): { status_code: number; body: string; headers: Record<string, string> } {
  let status: number;
  let headers: Record<string, string> = {};
  let body: { error: { code: string; message: string } };
  if (err instanceof DomainError || isTransient(err)) {
    ({ status, body, headers } = toErrorResponse(err));
  } else if (typeof (err as { status_code?: unknown }).status_code === 'number') {
    // @tus/server's own errors ({status_code, body}): protocol violations, 409 offsets, 404s, 413s…
    const e = err as { status_code: number; body?: string };
    // A lock that could not be had in time is a busy upload, not a server fault; an extension the
    // client asked for and this server does not offer (Upload-Defer-Length, Upload-Concat: 501 from
    // @tus/server) is the client's request to change, not a server fault either.
    status = e.status_code === 500 ? 503 : e.status_code === 501 ? 400 : e.status_code;
    body = { error: { code: status === 503 ? 'unavailable' : `tus_${status}`, message: (e.body ?? '').trim() || 'upload request refused' } };
  } else {
    ({ status, body } = toErrorResponse(err));
    log.error({ err, method: req.method, url: req.url }, 'resumable upload request failed');
  }
  return { status_code: status, body: JSON.stringify(body), headers };
}

/**
 * Serves tus 1.0 at `/files` of the upload function with @tus/server. A server is made per request,
 * bound to the caller (`owner`; OPTIONS needs none), so the store only ever sees that user's uploads
 * and anyone else's are 404. Everything it keeps is in the shared stores (see lib/pipeline/resumable.ts).
 */
export async function serveTus(req: http.IncomingMessage, res: http.ServerResponse, deps: ResumableDeps, owner: Owner | undefined): Promise<void> {
  const config = getConfig();
  const prefix = mountPrefix(req);
  // Imported at the first tus request, not at start: @tus/server's web adapter (srvx) touches the
  // global Headers and Request as it loads, which makes node load its fetch implementation (undici),
  // ~35 ms of every cold start of the upload function, although only tus requests use it.
  const { Server } = await import('@tus/server');
  // @tus/server keeps only the status and body of an error's answer: its headers (Retry-After) are added below.
  let errorHeaders: Record<string, string> = {};
  const server = new Server({
    path: '/files',
    datastore: new ResumableStore(deps, owner),
    locker: createDbLocker(deps.db),
    maxSize: config.limits.uploadBytes,
    // Relative, so it is right behind any host name and on the local stack's /upload prefix.
    generateUrl: (_req, { id }) => `${prefix}/files/${id}`,
    namingFunction: () => newUploadId(),
    exposedHeaders: ['Upload-Job-Id', 'Upload-Job-Url', 'Retry-After'],
    disableTerminationForFinishedUploads: true,
    onUploadCreate: async (_req, upload) => {
      parseUploadMetadata(upload.metadata, config.webhooks); // a bad option, callbackUrl or no filename: 400 before any byte
      if (upload.size === 0) throw new BadInputError('the file is empty');
      if (owner) await checkQuotas(deps.db, owner.id, config); // 429 before any byte, as for a POST
      return {};
    },
    onUploadFinish: async (_req, upload) => {
      const jobId = owner && await finishedJobId(deps.db, upload.id, owner);
      if (!jobId) return {};
      return { headers: { 'Upload-Job-Id': jobId, 'Upload-Job-Url': `${config.downloadUrl}/jobs/${jobId}` } };
    },
    onResponseError: (request, err) => {
      const { headers, ...answer } = tusError(request, err);
      errorHeaders = headers;
      return answer;
    },
  });
  const response = await server.handleWeb(toWebRequest(req));
  const headers = { ...Object.fromEntries(response.headers), ...(response.status >= 400 ? errorHeaders : {}) };
  // @tus/server answers errors as text/plain; the bodies tusError made are JSON, and say so.
  if (response.status >= 400) headers['content-type'] = 'application/json; charset=utf-8';
  const body = response.body ? Buffer.from(await response.arrayBuffer()) : undefined;
  res.writeHead(response.status, headers).end(body);
}
