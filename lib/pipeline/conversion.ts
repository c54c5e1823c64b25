import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BlobExistsError, type BlobStore } from '../storage/blobs';
import { lazyClient } from '../core/clients';
import { UnavailableError } from '../core/errors';
import { getConfig, type Config } from '../core/config';
import type { Db } from '../storage/db';
import { defaultTitle, mp3Filename } from './filenames';
import type { VideoUploaded } from '../messaging/events';
import { clearVideo, completeConversion, countAttempt, failConversion, findJob, recordProgress, type Job } from './jobs';
import { publishOutcome } from './outcomes';
import { log } from '../core/log';
import { conversionDuration, conversionSpeed, jobsFinished, jobWait } from '../core/metrics';
import { withSpan } from '../core/tracing';
import { remainingConversionSeconds } from './quotas';
import { claimJob, claimLooksAbandoned, dropClaim, releaseNext, renewClaim } from './scheduling';
import type { Broker } from '../messaging/queue';
import { createTranscoder, TranscodeError, type Transcoder } from '../media/transcode';

/** After this many starts a job that keeps killing the converter is failed instead of retried forever. */
export const maxAttempts = 3;

/** Progress reaches the job row at most this often: clients poll it, the converter reports every 500 ms. */
const progressWriteMs = 1000;

/** How long a conversion waits, each time, for another writer of the same MP3 to finish (at most 5 waits). */
const mp3WriterWaitMs = 1000;

let progressOf: string | undefined;

/** The instance's converter: the wasm core is compiled once and reused by every event. */
export const getTranscoder = lazyClient(
  'transcoder',
  async () => {
    const config = getConfig();
    return createTranscoder({
      maxDurationSeconds: config.limits.durationSeconds,
      maxOutputBytes: config.limits.outputBytes,
      timeoutMs: config.timeouts.convertMs,
      parallelism: config.convertParallelism,
      onProgress: ({ percent, timeSeconds }) => log.info({ jobId: progressOf, percent: Math.round(percent), timeSeconds }, 'converting'),
    });
  },
  (t) => t.close(),
);

export interface ConvertDeps {
  db: Db;
  blobs: BlobStore;
  broker: Broker;
  transcoder: Transcoder;
  config: Pick<Config, 'keepSource' | 'quotas' | 'limits' | 'timeouts'>;
}

export type ConvertOutcome = 'converted' | 'failed' | 'already-done' | 'already-failed' | 'unknown-job' | 'not-convertible' | 'not-its-turn' | 'claimed';

/**
 * The video as a file the converter reads: on the directory store the store's own file, in place (a
 * multi-GB copy saved); on GridFS a copy streamed to `copyTo`, which the caller removes.
 */
export async function videoFile(blobs: BlobStore, blobId: string, copyTo: string): Promise<string> {
  const local = await blobs.localPath('videos', blobId);
  if (local) return local;
  await pipeline(await blobs.read('videos', blobId), fs.createWriteStream(copyTo));
  return copyTo;
}

/**
 * Handles one `video.uploaded` delivery. Safe to repeat: a job that is done or failed converts
 * nothing and only publishes its outcome if that had not happened yet; a job left `converting` by a
 * crash is converted again once its converter's claim has lapsed, and never by two deliveries at
 * once. Permanent problems with the input end the job `failed`; a dependency that is down throws (the
 * function answers 503 and the source retries). Once the job has ended, the owner's next job gets its
 * turn (lib/pipeline/scheduling.ts).
 */
export async function convertJob(deps: ConvertDeps, event: VideoUploaded): Promise<ConvertOutcome> {
  const outcome = await runJob(deps, event);
  if (ended.has(outcome)) {
    const job = await findJob(deps.db, event.jobId);
    if (job) await releaseNext(deps, job.ownerId);
  }
  return outcome;
}

const ended = new Set<ConvertOutcome>(['converted', 'failed', 'already-done', 'already-failed']);

async function runJob(deps: ConvertDeps, event: VideoUploaded): Promise<ConvertOutcome> {
  const { db } = deps;
  const leaseMs = deps.config.timeouts.convertLeaseMs;
  // The event is a hint (anyone reaching the receiver can post one): only the row's state and the
  // row's video and options count, and only a job whose turn has come, claimed by nobody else, converts.
  const token = await claimJob(db, event.jobId, leaseMs);
  const job = await findJob(db, event.jobId);
  if (!job) return 'unknown-job'; // deleted by its owner meanwhile: nothing to do
  if (job.status === 'done') {
    await finishDone(deps, job);
    return 'already-done';
  }
  if (job.status === 'failed') {
    if (!job.publishedAt) await publishFailure(deps, job, job.error ?? 'the conversion failed');
    return 'already-failed';
  }
  if (!token) {
    if (job.status === 'queued' && job.releasedAt === null) return 'not-its-turn'; // it is published when its turn comes
    if (job.status === 'converting') {
      // A live converter renews its claim every third of the lease. One that missed a renewal has most
      // likely died: ask the source to retry, and a retry after the claim lapses converts the job. A
      // fresh claim is a duplicate delivery: done here (the reconciler re-drives the job should its
      // converter die after all).
      if (await claimLooksAbandoned(db, job.id, leaseMs)) throw new UnavailableError('the job (its converter stopped renewing its claim)');
      return 'claimed';
    }
    return 'not-convertible';
  }
  const renewal = setInterval(() => {
    renewClaim(db, job.id, token, leaseMs).catch((err: unknown) => log.warn({ err, jobId: job.id }, 'could not renew the claim on a job'));
  }, leaseMs / 3);
  renewal.unref();
  try {
    return await convertClaimed(deps, job);
  } catch (err) {
    // A retry of this delivery (503) may claim the job again at once.
    await dropClaim(db, job.id, token).catch(() => undefined);
    throw err;
  } finally {
    clearInterval(renewal);
  }
}

async function convertClaimed(deps: ConvertDeps, job: Job): Promise<ConvertOutcome> {
  const { db, blobs, transcoder } = deps;
  const video = job.videoBlobId ? await blobs.stat('videos', job.videoBlobId) : undefined;
  if (!job.videoBlobId || !video) return fail(deps, job, 'The uploaded video is no longer stored.', 'video-missing');
  if (job.attempts === 0) jobWait.observe((Date.now() - job.createdAt) / 1000); // its first start only
  if ((await countAttempt(db, job.id)) > maxAttempts) {
    return fail(deps, job, `The conversion stopped ${maxAttempts} times without finishing, so it was given up.`, 'attempts');
  }

  // The owner's daily quota bounds this conversion too: a short file declaring hours is stopped at probe.
  const allowed = await remainingConversionSeconds(db, job.ownerId, job.id, deps.config);
  if (allowed <= 0) return fail(deps, job, 'Your daily conversion quota is used up; upload the file again tomorrow.', 'quota');
  // Conversion from disk: the video is read where the directory store keeps it, or streamed from GridFS
  // to a file; converted file to file; the MP3 streamed to the store, so memory does not grow with
  // either. The files made here are removed on every path (and by the transcoder's crash recovery if
  // this process dies first).
  const tempName = `${job.id}-${randomBytes(4).toString('hex')}`; // two deliveries of one job may overlap
  const inputFile = path.join(transcoder.workDir, `${tempName}.video`);
  const outputFile = path.join(transcoder.workDir, `${tempName}.mp3`);
  const started = Date.now();
  let result;
  let mp3;
  progressOf = job.id;
  const progress = progressWriter(db, job.id);
  try {
    const source = await videoFile(blobs, job.videoBlobId, inputFile);
    try {
      const options = { ...job.options, title: job.options.title ?? defaultTitle(job.filename) };
      result = await withSpan('transcode', { attributes: { 'video2mp3.job_id': job.id, 'video2mp3.video_bytes': video.size } }, async (span) => {
        const converted = await transcoder.transcode(source, outputFile, options, { maxDurationSeconds: allowed, onProgress: progress.report });
        span.set({ 'video2mp3.media_seconds': converted.durationSeconds });
        return converted;
      });
    } catch (err) {
      if (err instanceof TranscodeError && err.reason === 'too-long' && allowed < deps.config.limits.durationSeconds) {
        return await fail(deps, job, `${err.message} (what is left of your daily conversion quota of ${deps.config.quotas.conversionSecondsPerDay} seconds)`, 'quota');
      }
      if (err instanceof TranscodeError) return await fail(deps, job, err.message, err.reason);
      if (err instanceof RangeError) return await fail(deps, job, `The conversion options are invalid: ${err.message}`, 'invalid-options');
      throw new UnavailableError('the converter', { cause: err }); // it broke, not the input: retry (bounded by maxAttempts)
    }
    mp3 = await storeMp3(blobs, job, outputFile);
  } finally {
    progressOf = undefined;
    await progress.settled();
    fs.rmSync(inputFile, { force: true });
    fs.rmSync(outputFile, { force: true });
  }

  const won = await completeConversion(db, job.id, {
    blobId: mp3.id,
    bytes: mp3.size,
    durationSeconds: result.durationSeconds,
    conversionMs: Date.now() - started,
  });
  log.info({ jobId: job.id, won, bytes: mp3.size, durationSeconds: result.durationSeconds, ms: Date.now() - started }, 'converted');
  if (!won) return 'already-done'; // a concurrent delivery finished first and publishes
  const wallSeconds = (Date.now() - started) / 1000;
  conversionDuration.observe(wallSeconds);
  if (wallSeconds > 0) conversionSpeed.observe(result.durationSeconds / wallSeconds);
  jobsFinished.inc({ outcome: 'done', reason: '' });
  await finishDone(deps, (await findJob(db, job.id))!);
  return 'converted';
}

/**
 * Writes a conversion's progress to its job row, at most once per progressWriteMs and one write at a
 * time; a failed write is logged and skipped (progress is advisory, the conversion goes on).
 */
function progressWriter(db: Db, jobId: string) {
  let lastWrite = 0;
  let writing: Promise<void> = Promise.resolve();
  return {
    report({ percent, timeSeconds }: { percent: number; timeSeconds: number }) {
      // 0 % is written when the conversion starts, done by completeConversion: neither spends a write.
      if (percent <= 0 || percent >= 100 || Date.now() - lastWrite < progressWriteMs) return;
      lastWrite = Date.now();
      writing = writing.then(() => recordProgress(db, jobId, percent, timeSeconds))
        .catch((err: unknown) => log.warn({ err, jobId }, 'could not record conversion progress'));
    },
    settled: () => writing,
  };
}

/**
 * Stores the MP3 under the job's id, so a repeated or concurrent conversion cannot store a second
 * one. When the id is taken but no complete blob shows up (the other writer is still busy), wait for
 * it; if none appears, the id holds the leftovers of a converter that died mid-write: clear them.
 */
async function storeMp3(blobs: BlobStore, job: Job, mp3File: string) {
  const meta = { owner: job.ownerId, filename: mp3Filename(job.filename), contentType: 'audio/mpeg' };
  for (let attempt = 0; ; attempt++) {
    const stored = await blobs.stat('mp3s', job.id);
    if (stored) return stored;
    try {
      return await blobs.put('mp3s', fs.createReadStream(mp3File), meta, { id: job.id });
    } catch (err) {
      if (!(err instanceof BlobExistsError)) throw err;
      if (attempt === 5) await blobs.delete('mp3s', job.id);
      else if (attempt > 5) throw err;
      await new Promise((r) => setTimeout(r, mp3WriterWaitMs));
    }
  }
}

/** Publishes success once, then removes the source video (unless KEEP_SOURCE). */
async function finishDone(deps: ConvertDeps, job: Job) {
  if (!job.publishedAt) await publishOutcome(deps, job);
  if (!deps.config.keepSource && job.videoBlobId) {
    await deps.blobs.delete('videos', job.videoBlobId);
    await clearVideo(deps.db, job.id);
  }
}

/** Ends the job failed; `reason` is the metric's label (a TranscodeError's reason, or what stopped it before). */
async function fail(deps: ConvertDeps, job: Job, message: string, reason: string): Promise<ConvertOutcome> {
  log.warn({ jobId: job.id, reason: message }, 'conversion failed');
  if (await failConversion(deps.db, job.id, message)) {
    jobsFinished.inc({ outcome: 'failed', reason });
    await publishFailure(deps, job, message);
  }
  return 'failed';
}

async function publishFailure(deps: ConvertDeps, job: Job, message: string) {
  await publishOutcome(deps, { ...job, status: 'failed', error: message });
}
