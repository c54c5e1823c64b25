import type http from 'node:http';
import { Server } from '@tus/server';
import { getConfig } from '../core/config';
import { BadInputError, DomainError, isTransient } from '../core/errors';
import { log } from '../core/log';
import { createDbLocker, finishedJobId, newUploadId, parseUploadMetadata, ResumableStore, type Owner, type ResumableDeps } from '../pipeline/resumable';
import { toErrorResponse } from './errors';
import { mountPrefix } from './serve';

/** The answer to every tus error: the project's JSON error body, whatever raised it. */
function tusError(req: Request, err: unknown): { status_code: number; body: string } {
  let status: number;
  let body: { error: { code: string; message: string } };
  if (err instanceof DomainError || isTransient(err)) {
    ({ status, body } = toErrorResponse(err));
  } else if (typeof (err as { status_code?: unknown }).status_code === 'number') {
    // @tus/server's own errors ({status_code, body}): protocol violations, 409 offsets, 404s, 413s…
    const e = err as { status_code: number; body?: string };
    // A lock that could not be had in time is a busy upload, not a server fault.
    status = e.status_code === 500 ? 503 : e.status_code;
    body = { error: { code: status === 503 ? 'unavailable' : `tus_${status}`, message: (e.body ?? '').trim() || 'upload request refused' } };
  } else {
    ({ status, body } = toErrorResponse(err));
    log.error({ err, method: req.method, url: req.url }, 'resumable upload request failed');
  }
  return { status_code: status, body: JSON.stringify(body) };
}

/**
 * Serves tus 1.0 at `/files` of the upload function with @tus/server. A server is made per request,
 * bound to the caller (`owner`; OPTIONS needs none), so the store only ever sees that user's uploads
 * and anyone else's are 404. Everything it keeps is in the shared stores (see lib/pipeline/resumable.ts).
 */
export async function serveTus(req: http.IncomingMessage, res: http.ServerResponse, deps: ResumableDeps, owner: Owner | undefined): Promise<void> {
  const config = getConfig();
  const prefix = mountPrefix(req);
  const server = new Server({
    path: '/files',
    datastore: new ResumableStore(deps, owner),
    locker: createDbLocker(deps.db),
    maxSize: config.limits.uploadBytes,
    // Relative, so it is right behind any host name and on the local stack's /upload prefix.
    generateUrl: (_req, { id }) => `${prefix}/files/${id}`,
    namingFunction: () => newUploadId(),
    exposedHeaders: ['Upload-Job-Id', 'Upload-Job-Url'],
    disableTerminationForFinishedUploads: true,
    onUploadCreate: async (_req, upload) => {
      parseUploadMetadata(upload.metadata); // a bad option or no filename: 400 before any byte
      if (upload.size === 0) throw new BadInputError('the file is empty');
      return {};
    },
    onUploadFinish: async (_req, upload) => {
      const jobId = owner && await finishedJobId(deps.db, upload.id, owner);
      if (!jobId) return {};
      return { headers: { 'Upload-Job-Id': jobId, 'Upload-Job-Url': `${config.downloadUrl}/jobs/${jobId}` } };
    },
    onResponseError: (request, err) => tusError(request, err),
  });
  // @tus/server answers errors as text/plain; the bodies tusError made are JSON, and say so.
  const writeHead = res.writeHead.bind(res) as (status: number, ...rest: unknown[]) => http.ServerResponse;
  res.writeHead = ((status: number, ...rest: unknown[]) => {
    const headers = rest.at(-1);
    if (status >= 400 && Array.isArray(headers)) {
      const at = headers.findIndex((h, i) => i % 2 === 0 && String(h).toLowerCase() === 'content-type');
      if (at >= 0) headers[at + 1] = 'application/json; charset=utf-8';
    }
    return writeHead(status, ...rest);
  }) as typeof res.writeHead;
  await server.handle(req, res);
}
