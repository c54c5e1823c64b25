/**
 * lib/pipeline owns a job's life: accepting an upload, the job record and its states, the conversion
 * of one job (storage in, converter, storage out, outcome event), and what a client sees of a job.
 */
import { randomBytes } from 'node:crypto';
import type { Db } from '../storage/db';
import { NotFoundError } from '../core/errors';
import type { Mp3Options } from '../media/options';
import type { Mp3Details } from '../media/transcode';

/**
 * `importing`: its video is being downloaded from a URL (lib/pipeline/imports.ts), then `queued`.
 * `expired`: done once, and its MP3 has since been deleted by the retention sweep.
 */
export type JobStatus = 'importing' | 'queued' | 'converting' | 'done' | 'failed' | 'expired';

export interface Job {
  id: string;
  ownerId: string;
  ownerEmail: string;
  status: JobStatus;
  filename: string;
  contentType: string;
  options: Mp3Options;
  videoBlobId: string | null;
  videoBytes: number;
  videoSha256: string;
  mp3BlobId: string | null;
  mp3Bytes: number | null;
  /** Loudness, cover, chapters and tags of the MP3 (done jobs converted since these were recorded). */
  mp3Details: Mp3Details | null;
  durationSeconds: number | null;
  conversionMs: number | null;
  error: string | null;
  /** 0–100 while converting (null before the converter reports). */
  progress: number | null;
  /** How far into the source the converter is, in seconds. */
  positionSeconds: number | null;
  /** Bytes of the video downloaded so far while `importing`. */
  importedBytes: number | null;
  /** Where the outcome is POSTed (a webhook), if the upload asked for it. */
  callbackUrl: string | null;
  attempts: number;
  publishedAt: number | null;
  /** When its turn came: published to `video` (docs/scheduling.md); null while it waits in its owner's queue. */
  releasedAt: number | null;
  createdAt: number;
  updatedAt: number;
}

/** 128 random bits, URL-safe: not sequential, not an ObjectId, not guessable. */
export const newJobId = () => randomBytes(16).toString('base64url');
const idPattern = /^[A-Za-z0-9_-]{22}$/;

type Row = Record<string, unknown>;
const n = (v: unknown) => (v === null || v === undefined ? null : Number(v));

function fromRow(r: Row): Job {
  return {
    id: r.id as string,
    ownerId: r.owner_id as string,
    ownerEmail: r.owner_email as string,
    status: r.status as JobStatus,
    filename: r.filename as string,
    contentType: r.content_type as string,
    options: JSON.parse(r.options as string) as Mp3Options,
    videoBlobId: (r.video_blob_id as string | null) ?? null,
    videoBytes: Number(r.video_bytes),
    videoSha256: r.video_sha256 as string,
    mp3BlobId: (r.mp3_blob_id as string | null) ?? null,
    mp3Bytes: n(r.mp3_bytes),
    mp3Details: r.mp3_details ? (JSON.parse(r.mp3_details as string) as Mp3Details) : null,
    durationSeconds: n(r.duration_seconds),
    conversionMs: n(r.conversion_ms),
    error: (r.error as string | null) ?? null,
    progress: n(r.progress),
    positionSeconds: n(r.position_seconds),
    importedBytes: n(r.imported_bytes),
    callbackUrl: (r.callback_url as string | null) ?? null,
    attempts: Number(r.attempts),
    publishedAt: n(r.published_at),
    releasedAt: n(r.released_at),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

export interface NewJob {
  id: string;
  ownerId: string;
  ownerEmail: string;
  filename: string;
  contentType: string;
  options: Mp3Options;
  videoBlobId: string;
  videoBytes: number;
  videoSha256: string;
  callbackUrl?: string;
}

export async function createJob(db: Db, job: NewJob, status: 'queued' | 'importing' = 'queued'): Promise<Job> {
  const now = Date.now();
  await db('jobs').insert({
    id: job.id,
    owner_id: job.ownerId,
    owner_email: job.ownerEmail,
    status,
    filename: job.filename,
    content_type: job.contentType,
    options: JSON.stringify(job.options),
    video_blob_id: job.videoBlobId,
    video_bytes: job.videoBytes,
    video_sha256: job.videoSha256,
    callback_url: job.callbackUrl ?? null,
    attempts: 0,
    created_at: now,
    updated_at: now,
  });
  return (await findJob(db, job.id))!;
}

export async function findJob(db: Db, id: string): Promise<Job | undefined> {
  if (!idPattern.test(id)) return undefined;
  const row = await db('jobs').where({ id }).first();
  return row ? fromRow(row) : undefined;
}

/** The job if it belongs to `ownerId`; otherwise 404, the same as for an id that does not exist. */
export async function getOwnedJob(db: Db, id: string, ownerId: string): Promise<Job> {
  const job = await findJob(db, id);
  if (!job || job.ownerId !== ownerId) throw new NotFoundError('job');
  return job;
}

/** A page of the owner's jobs, newest first; `before` is the cursor from the previous page. */
export async function listJobs(db: Db, ownerId: string, page: { limit: number; before?: { createdAt: number; id: string } }) {
  const q = db('jobs').where({ owner_id: ownerId });
  if (page.before) {
    const { createdAt, id } = page.before;
    q.andWhere((w) => w.where('created_at', '<', createdAt).orWhere((x) => x.where('created_at', createdAt).andWhere('id', '<', id)));
  }
  const rows: Row[] = await q.orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).limit(page.limit + 1);
  const jobs = rows.slice(0, page.limit).map(fromRow);
  return { jobs, more: rows.length > page.limit };
}

/** The owner's done jobs that still have their MP3, newest first (a podcast feed's items). */
export async function listDoneJobs(db: Db, ownerId: string, limit: number): Promise<Job[]> {
  const rows: Row[] = await db('jobs').where({ owner_id: ownerId, status: 'done' }).whereNotNull('mp3_blob_id')
    .orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).limit(limit);
  return rows.map(fromRow);
}

export async function deleteJob(db: Db, id: string): Promise<void> {
  await db('jobs').where({ id }).delete();
}

/** Records how far a running conversion is; a job that has ended meanwhile is left alone. */
export async function recordProgress(db: Db, id: string, progress: number, positionSeconds: number): Promise<void> {
  await db('jobs').where({ id, status: 'converting' })
    .update({ progress: Math.max(0, Math.min(100, Math.floor(progress))), position_seconds: Math.max(0, positionSeconds) });
}

/**
 * Counts a run of the converter on this job, just before it starts; outages of the database or
 * storage before that point do not count. Returns the new count.
 */
export async function countAttempt(db: Db, id: string): Promise<number> {
  await db('jobs').where({ id }).update({ attempts: db.raw('attempts + 1'), updated_at: Date.now() });
  return (await findJob(db, id))?.attempts ?? 0;
}

/**
 * converting → done with the MP3. Conditional, so when two deliveries of one event race, exactly
 * one wins; the loser gets false and removes its own MP3.
 */
export async function completeConversion(db: Db, id: string, mp3: { blobId: string; bytes: number; durationSeconds: number; conversionMs: number; details?: Mp3Details }): Promise<boolean> {
  const changed = await db('jobs').where({ id, status: 'converting' }).update({
    status: 'done',
    mp3_blob_id: mp3.blobId,
    mp3_bytes: mp3.bytes,
    duration_seconds: mp3.durationSeconds,
    conversion_ms: mp3.conversionMs,
    mp3_details: mp3.details ? JSON.stringify(mp3.details) : null,
    error: null,
    updated_at: Date.now(),
  });
  return changed === 1;
}

/** queued/converting → failed with a message for the user. False when the job had already ended. */
export async function failConversion(db: Db, id: string, message: string): Promise<boolean> {
  const changed = await db('jobs').where({ id }).whereIn('status', ['queued', 'converting'])
    .update({ status: 'failed', error: message, updated_at: Date.now() });
  return changed === 1;
}

/** Records that the outcome event went out, so a redelivery does not publish it again. */
export async function markPublished(db: Db, id: string): Promise<void> {
  await db('jobs').where({ id }).update({ published_at: Date.now(), updated_at: Date.now() });
}

/** Forgets the source video once it is no longer needed. */
export async function clearVideo(db: Db, id: string): Promise<void> {
  await db('jobs').where({ id }).update({ video_blob_id: null, updated_at: Date.now() });
}

/** Records how much of an import has arrived (and that it is alive: the reconciler watches updated_at). */
export async function recordImportProgress(db: Db, id: string, bytes: number, progress: number | null): Promise<void> {
  await db('jobs').where({ id, status: 'importing' }).update({ imported_bytes: bytes, progress, updated_at: Date.now() });
}

/**
 * importing → queued with the stored video. False when the job ended meanwhile (deleted by its
 * owner, or failed by the reconciler): the caller removes the video it stored.
 */
export async function finishImport(db: Db, id: string, video: { bytes: number; sha256: string }): Promise<boolean> {
  const changed = await db('jobs').where({ id, status: 'importing' })
    .update({ status: 'queued', video_bytes: video.bytes, video_sha256: video.sha256, imported_bytes: video.bytes, progress: null, updated_at: Date.now() });
  return changed === 1;
}

/**
 * importing → failed with a message for the user. With `videoRemoved` the partial video is gone;
 * otherwise the job keeps its id and the retention sweep removes it with failed jobs' sources.
 */
export async function failImport(db: Db, id: string, message: string, videoRemoved = true): Promise<boolean> {
  const changed = await db('jobs').where({ id, status: 'importing' })
    .update({ status: 'failed', error: message, progress: null, updated_at: Date.now(), ...(videoRemoved ? { video_blob_id: null } : {}) });
  return changed === 1;
}
