import { trackWork } from '../core/clients';
import type { Config } from '../core/config';
import { BadInputError, TooLargeError } from '../core/errors';
import { log } from '../core/log';
import { jobsCreated, jobsFinished } from '../core/metrics';
import { parseMp3Options, type Mp3Options } from '../media/options';
import { parseCallbackUrl } from '../core/callback-url';
import { newBlobId } from '../storage/blobs';
import { cleanFilename } from './filenames';
import { createJob, failImport, findJob, finishImport, newJobId, recordImportProgress, type Job } from './jobs';
import { publishOutcome } from './outcomes';
import { openRemoteFile, type RemoteFile } from './remote-file';
import { checkQuotas, publishTurns, releaseNext, takePlace } from './scheduling';
import { peek, sniffBytes, sniffMedia, type UploadDeps } from './uploads';

export interface ImportRequest {
  url: string;
  options: Mp3Options;
  callbackUrl?: string;
}

export type ImportDeps = UploadDeps & { config: UploadDeps['config'] & Pick<Config, 'imports'> };

/** `{"url": …, "callbackUrl"?: …, …options}`, checked before anything is fetched. */
export function parseImportRequest(body: unknown, config: Pick<Config, 'imports' | 'webhooks'>): ImportRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadInputError('send a JSON object with the url to import');
  const { url, callbackUrl, ...rest } = body as Record<string, unknown>;
  if (url === undefined || url === '') throw new BadInputError('url: required');
  return {
    url: parseCallbackUrl(url, config.imports, 'url')!,
    options: parseMp3Options(rest),
    callbackUrl: parseCallbackUrl(callbackUrl, config.webhooks),
  };
}

/** Progress is written at most this often (it is also the import's heartbeat for the reconciler). */
const progressEveryMs = 1000;

/**
 * Starts importing a video from a URL. What can be known at once is checked before answering: the
 * quotas (a full queue or a spent day is 429 before a byte is fetched), the URL and each redirect, the server's status and length, and the first bytes (a video,
 * or 415). Then the job takes its place in the owner's queue as an upload's does (takePlace, in one
 * step under the owner's lock), `importing`, and the rest of the file streams into the blob store in
 * the background (runImport); once stored it waits for its turn like any queued job, and any failure
 * there fails the job with a clear message, removes what was stored and frees its place. Knative may stop an instance once its requests are answered: closeClients (run on
 * SIGTERM) stops a running import and fails its job, and the reconciler fails one whose process died
 * without a word (docs/deploy.md, "URL imports").
 */
export async function startImport(deps: ImportDeps, owner: { id: string; email: string }, request: ImportRequest): Promise<Job> {
  await checkQuotas(deps.db, owner.id, deps.config);
  const total = new AbortController();
  const timer = setTimeout(() => total.abort(new BadInputError(`url: the download did not finish within ${deps.config.imports.totalMs / 1000} s`)), deps.config.imports.totalMs);
  let remote: RemoteFile | undefined;
  try {
    remote = await openRemoteFile(request.url, { ...deps.config.imports, maxBytes: deps.config.limits.uploadBytes }, total.signal);
    const { head, all } = await peek(remote.body, sniffBytes);
    const contentType = await sniffMedia(head);
    const blobId = newBlobId();
    const fields = {
      id: newJobId(), ownerId: owner.id, ownerEmail: owner.email, filename: cleanFilename(remote.filename), contentType,
      options: request.options, videoBlobId: blobId, videoBytes: 0, videoSha256: '', callbackUrl: request.callbackUrl,
    };
    const { value: job, released } = await takePlace(deps.db, owner.id, deps.config, (trx) => createJob(trx, fields, 'importing'));
    jobsCreated.inc();
    // Only jobs already queued can have been released here (an importing one waits for its bytes).
    await publishTurns(deps, released).catch((err: unknown) => log.warn({ err, owner: owner.id }, 'could not publish a turn; the reconciler will'));
    log.info({ jobId: job.id, owner: owner.id, host: new URL(request.url).host, bytes: remote.length }, 'import started');
    const untrack = trackWork(async () => {
      total.abort(new Error('the service stopped during the import; import the URL again'));
      await running;
    });
    const running = runImport(deps, job, blobId, all, remote.length, total.signal)
      .finally(() => {
        clearTimeout(timer);
        untrack();
      });
    return job;
  } catch (err) {
    clearTimeout(timer);
    remote?.body.destroy();
    throw err;
  }
}

/** Counts the bytes going by, recording progress at most once a second. */
async function* counted(deps: ImportDeps, jobId: string, source: AsyncIterable<Buffer>, length: number | undefined): AsyncGenerator<Buffer> {
  let bytes = 0;
  let last = Date.now();
  for await (const chunk of source) {
    bytes += chunk.length;
    if (Date.now() - last >= progressEveryMs) {
      last = Date.now();
      await recordImportProgress(deps.db, jobId, bytes, length ? Math.min(99, Math.floor((bytes / length) * 100)) : null);
    }
    yield chunk;
  }
}

function failureMessage(err: unknown, signal: AbortSignal, limit: number): string {
  if (signal.aborted) return (signal.reason as Error).message;
  if (err instanceof TooLargeError) return `The video is larger than the limit of ${limit} bytes.`;
  if (err instanceof BadInputError) return err.message;
  return `The download stopped: ${(err as Error).message}`;
}

/** The rest of an import; never rejects: its outcome is the job's state. */
async function runImport(deps: ImportDeps, job: Job, blobId: string, source: AsyncIterable<Buffer>, length: number | undefined, signal: AbortSignal): Promise<void> {
  const { db, blobs } = deps;
  const limit = deps.config.limits.uploadBytes;
  try {
    const blob = await blobs.put('videos', counted(deps, job.id, source, length), { owner: job.ownerId, filename: job.filename, contentType: job.contentType }, { id: blobId, limit });
    if (!(await finishImport(db, job.id, { bytes: blob.size, sha256: blob.sha256 }))) {
      await blobs.delete('videos', blobId); // deleted or failed meanwhile
      return;
    }
    log.info({ jobId: job.id, bytes: blob.size }, 'import finished; video queued');
    // Its turn comes as any queued job's (now, if a slot is free). A failed publish hands the turn
    // back: the reconciler gives it again later.
    await releaseNext(deps, job.ownerId).catch((err: unknown) => log.warn({ err, jobId: job.id }, 'could not queue an imported video; the reconciler will'));
  } catch (err) {
    const message = failureMessage(err, signal, limit);
    log.warn({ jobId: job.id, reason: message }, 'import failed');
    try {
      await blobs.delete('videos', blobId);
      if (await failImport(db, job.id, message)) {
        jobsFinished.inc({ outcome: 'failed', reason: 'import' });
        await publishOutcome(deps, (await findJob(db, job.id))!);
      }
      // Its place in the queue is free: the owner's next job may have its turn.
      await releaseNext(deps, job.ownerId);
    } catch (cleanupErr) {
      log.error({ err: cleanupErr, jobId: job.id }, 'could not record a failed import; the reconciler will');
    }
  }
}
