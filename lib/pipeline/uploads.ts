import { fileTypeFromBuffer } from 'file-type';
import type { BlobInfo, BlobStore } from '../storage/blobs';
import type { Config } from '../core/config';
import type { Db } from '../storage/db';
import { isDuplicateKey } from '../storage/db';
import { BadInputError, TooLargeError, UnsupportedMediaError } from '../core/errors';
import { cleanFilename } from './filenames';
import { createJob, deleteJob, findJob, newJobId, type Job } from './jobs';
import { checkQuotas, publishTurns, takePlace } from './scheduling';
import { log } from '../core/log';
import type { Mp3Options } from '../media/options';
import type { Broker } from '../messaging/queue';
import { jobsCreated, uploadBytes, uploadDuration } from '../core/metrics';

/** How many leading bytes decide what kind of file this is. */
export const sniffBytes = 64 * 1024;

/** Decides from the bytes, not the client's word, that this is an audio/video container. */
export async function sniffMedia(head: Buffer): Promise<string> {
  if (head.length === 0) throw new BadInputError('the file is empty');
  const type = await fileTypeFromBuffer(head.subarray(0, sniffBytes));
  if (!type || !/^(video|audio)\//.test(type.mime)) {
    throw new UnsupportedMediaError(`this is not a video file${type ? ` (it looks like ${type.mime})` : ''}; upload a video such as MP4, MKV, WebM, MOV, AVI, FLV or MPEG-TS`);
  }
  return type.mime;
}

/** Reads the first `bytes` of a stream and gives back the whole stream, those bytes included. */
export async function peek(source: AsyncIterable<Buffer | string>, bytes: number): Promise<{ head: Buffer; all: AsyncIterable<Buffer> }> {
  const it = source[Symbol.asyncIterator]();
  const parts: Buffer[] = [];
  let size = 0;
  let ended = false;
  while (size < bytes) {
    const next = await it.next();
    if (next.done) {
      ended = true;
      break;
    }
    const buf = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
    parts.push(buf);
    size += buf.length;
  }
  const head = Buffer.concat(parts);
  async function* all(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    if (ended) return;
    for (let next = await it.next(); !next.done; next = await it.next()) {
      yield typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
    }
  }
  return { head, all: all() };
}

export interface UploadDeps {
  db: Db;
  blobs: BlobStore;
  broker: Broker;
  config: Pick<Config, 'limits' | 'quotas' | 'webhooks'>;
}

/** A video in the blob store, not yet a job. */
export interface StoredVideo {
  blob: BlobInfo;
  filename: string;
  contentType: string;
}

/**
 * Streams a video into the blob store, sniffing its first bytes on the way: a file that is not a
 * video is refused before anything is stored, one over MAX_UPLOAD_BYTES or cut short leaves nothing.
 * Memory stays at the sniff window plus the store's own window, whatever the size.
 */
export async function storeVideo(deps: Pick<UploadDeps, 'db' | 'blobs' | 'config'>, owner: { id: string }, upload: { filename: string; source: AsyncIterable<Buffer | string> }): Promise<StoredVideo> {
  const { db, blobs, config } = deps;
  await checkQuotas(db, owner.id, config); // before a byte is stored
  const { head, all } = await peek(upload.source, sniffBytes);
  const contentType = await sniffMedia(head);
  const filename = cleanFilename(upload.filename);
  const limit = config.limits.uploadBytes;
  const end = uploadDuration.startTimer({ kind: 'single' });
  try {
    const blob = await blobs.put('videos', all, { owner: owner.id, filename, contentType }, { limit });
    end();
    uploadBytes.observe({ kind: 'single' }, blob.size);
    return { blob, filename, contentType };
  } catch (err) {
    if (err instanceof TooLargeError) throw new TooLargeError(limit, 'the video');
    throw err;
  }
}

/**
 * Records the job for a stored video in the owner's queue and, when its turn has come, publishes its
 * conversion, in that order (lib/pipeline/scheduling.ts). If a step fails the earlier ones are undone
 * (no orphan blob, no job that would never move) and the error goes on: a full queue or a spent day
 * is a 429, a dependency that is down a 503 (lib/http/errors.ts), anything else a bug (500).
 *
 * The publish comes after the job row is committed. When the publish fails we undo and answer 503
 * rather than keep the job and answer 202: the client learns at once that it must retry, and nothing
 * is kept that nobody knows about. When the process dies between the row and the publish (no undo
 * runs), the job stays `queued` and the reconciler (reconcile.ts) publishes its event later.
 */
export async function queueJob(deps: UploadDeps, owner: { id: string; email: string }, video: StoredVideo, options: Mp3Options, callbackUrl?: string): Promise<Job> {
  const { db, blobs } = deps;
  const jobId = newJobId();
  let job: Job;
  let released: string[];
  try {
    ({ value: job, released } = await takePlace(db, owner.id, deps.config, (trx) => createJob(trx, jobFields(jobId, owner, video, options, callbackUrl))));
  } catch (err) {
    await undo(() => blobs.delete('videos', video.blob.id));
    throw err;
  }
  try {
    await publishTurns(deps, released);
  } catch (err) {
    await undo(() => deleteJob(db, jobId));
    await undo(() => blobs.delete('videos', video.blob.id));
    throw err;
  }
  jobsCreated.inc();
  log.info({ jobId, owner: owner.id, bytes: video.blob.size, contentType: video.contentType }, 'video queued');
  return job;
}

/**
 * The job of a finished resumable upload, under the upload's id: a finish run again after a crash
 * finds the job instead of making a second one and publishes the same event (same id) again, which
 * convert treats as a repeat. The caller records the finish once this returns, so a retried final
 * PATCH after that publishes nothing. The blob is the upload itself: nothing is copied.
 */
export async function queueUploadJob(deps: UploadDeps, jobId: string, owner: { id: string; email: string }, video: StoredVideo, options: Mp3Options, callbackUrl?: string): Promise<Job> {
  const { db } = deps;
  let job: Job;
  let released: string[];
  try {
    // Its place in the queue was taken when the upload was created (ResumableStore.create).
    ({ value: job, released } = await takePlace(db, owner.id, deps.config, (trx) => createJob(trx, jobFields(jobId, owner, video, options, callbackUrl)), { reserved: true }));
    jobsCreated.inc();
  } catch (err) {
    if (!isDuplicateKey(err)) throw err;
    job = (await findJob(db, jobId))!;
    released = job.status === 'queued' && job.releasedAt !== null ? [job.id] : []; // published again: convert sees a repeat
  }
  await publishTurns(deps, released);
  log.info({ jobId, owner: owner.id, bytes: video.blob.size, contentType: video.contentType }, 'resumable upload queued');
  return job;
}

function jobFields(id: string, owner: { id: string; email: string }, video: StoredVideo, options: Mp3Options, callbackUrl?: string) {
  return {
    callbackUrl,
    id,
    ownerId: owner.id,
    ownerEmail: owner.email,
    filename: video.filename,
    contentType: video.contentType,
    options,
    videoBlobId: video.blob.id,
    videoBytes: video.blob.size,
    videoSha256: video.blob.sha256,
  };
}

async function undo(step: () => Promise<unknown>) {
  try {
    await step();
  } catch (err) {
    log.error({ err }, 'could not undo a step of a failed upload');
  }
}
