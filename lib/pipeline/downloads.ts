import { z } from 'zod';
import type { Config } from '../core/config';
import { BadInputError } from '../core/errors';
import type { BlobStore } from '../storage/blobs';
import type { Mp3Details } from '../media/transcode';
import type { Job } from './jobs';

/** What a client sees of a job; `webhook` is its webhook's state (lib/mail/webhook-outbox.ts) when it has one. */
export function jobView(job: Job, config: Pick<Config, 'downloadUrl'>, webhook?: object) {
  return {
    jobId: job.id,
    status: job.status,
    filename: job.filename,
    createdAt: new Date(job.createdAt).toISOString(),
    updatedAt: new Date(job.updatedAt).toISOString(),
    options: job.options,
    ...(job.error ? { error: job.error } : {}),
    ...(job.status === 'importing' ? { importedBytes: job.importedBytes ?? 0, ...(job.progress !== null ? { progress: job.progress } : {}) } : {}),
    ...(job.status === 'converting' ? { progress: job.progress ?? 0, positionSeconds: job.positionSeconds ?? 0 } : {}),
    ...(job.status === 'done' && job.mp3BlobId
      ? { mp3: { size: job.mp3Bytes, durationSeconds: job.durationSeconds, url: `${config.downloadUrl}/jobs/${job.id}/mp3`, ...(job.mp3Details ? mp3DetailsView(job.mp3Details) : {}) } }
      : {}),
    ...(webhook ? { webhook } : {}),
  };
}

/** What the MP3 got: the loudness measured and applied, whether it has a cover, its chapters and tags. */
function mp3DetailsView(d: Mp3Details) {
  const l = d.loudness;
  return {
    // A silent span's true peak is -inf, which JSON has not: null.
    ...(l ? { loudness: { targetLufs: l.targetLufs, truePeakLimitDb: l.truePeakLimitDb, measuredLufs: l.measuredLufs, measuredTruePeakDb: Number.isFinite(l.measuredTruePeakDb) ? l.measuredTruePeakDb : null, gainDb: l.gainDb, limited: l.limited } } : {}),
    cover: d.cover,
    chapters: d.chapters,
    tags: d.tags,
  };
}

/** Cursor of a page of jobs: opaque to clients. */
export const encodeCursor = (job: Pick<Job, 'createdAt' | 'id'>) => Buffer.from(`${job.createdAt}.${job.id}`).toString('base64url');
function decodeCursor(cursor: string): { createdAt: number; id: string } | undefined {
  const m = /^(\d{1,15})\.([A-Za-z0-9_-]{22})$/.exec(Buffer.from(cursor, 'base64url').toString());
  return m ? { createdAt: Number(m[1]), id: m[2]! } : undefined;
}

const pageQuery = z.object({ limit: z.coerce.number().int().min(1).max(100).default(20), cursor: z.string().max(100).optional() });

/** `?limit=&cursor=` of the job list; 400 for anything else. */
export function parsePage(query: unknown): { limit: number; before?: { createdAt: number; id: string } } {
  const parsed = pageQuery.safeParse(query);
  if (!parsed.success) throw new BadInputError('limit must be 1–100 and cursor a value from a previous page');
  const { limit, cursor } = parsed.data;
  if (cursor === undefined) return { limit };
  const before = decodeCursor(cursor);
  if (!before) throw new BadInputError('cursor is not a value from a previous page');
  return { limit, before };
}

/** Removes a job's files; each step is idempotent, so a retried DELETE finishes. */
export async function removeJobFiles(blobs: BlobStore, job: Job) {
  if (job.videoBlobId) await blobs.delete('videos', job.videoBlobId);
  if (job.mp3BlobId) await blobs.delete('mp3s', job.mp3BlobId);
}
