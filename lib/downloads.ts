import { create as contentDisposition } from 'content-disposition';
import parseRange from 'range-parser';
import type { Response } from 'express';
import type { BlobStore } from './blobs';
import type { Config } from './config';
import { conflict, notFound, rangeNotSatisfiable } from './errors';
import type { Job } from './jobs';

/** What a client sees of a job. */
export function jobView(job: Job, config: Pick<Config, 'downloadUrl'>) {
  return {
    jobId: job.id,
    status: job.status,
    filename: job.filename,
    createdAt: new Date(job.createdAt).toISOString(),
    updatedAt: new Date(job.updatedAt).toISOString(),
    ...(job.error ? { error: job.error } : {}),
    ...(job.status === 'done' && job.mp3BlobId
      ? { mp3: { size: job.mp3Bytes, durationSeconds: job.durationSeconds, url: `${config.downloadUrl}/jobs/${job.id}/mp3` } }
      : {}),
  };
}

/** A file name without its extension (`holiday.mp4` → `holiday`). */
export const withoutExtension = (filename: string) => filename.replace(/\.[^./]{1,10}$/, '');

/** The original name with its extension turned into .mp3. */
export const mp3Filename = (filename: string) => `${withoutExtension(filename) || 'audio'}.mp3`;

/** Cursor of a page of jobs: opaque to clients. */
export const encodeCursor = (job: Pick<Job, 'createdAt' | 'id'>) => Buffer.from(`${job.createdAt}.${job.id}`).toString('base64url');
export function decodeCursor(cursor: string): { createdAt: number; id: string } | undefined {
  const m = /^(\d{1,15})\.([A-Za-z0-9_-]{22})$/.exec(Buffer.from(cursor, 'base64url').toString());
  return m ? { createdAt: Number(m[1]), id: m[2]! } : undefined;
}

/**
 * Streams a job's MP3 with ETag, conditional GET, and single byte ranges (206); several ranges are
 * answered with the whole file, which RFC 9110 allows.
 */
export async function sendMp3(rangeHeader: string | undefined, ifNoneMatch: string | undefined, res: Response, blobs: BlobStore, job: Job) {
  if (job.status !== 'done' || !job.mp3BlobId) throw conflict(`the MP3 is not ready: the job is ${job.status}`);
  const info = await blobs.stat('mp3s', job.mp3BlobId);
  if (!info) throw notFound('file');
  const etag = `"${info.sha256}"`;
  const headers = {
    'Content-Type': 'audio/mpeg',
    'Accept-Ranges': 'bytes',
    ETag: etag,
    'Cache-Control': 'private, max-age=0, must-revalidate',
    'Content-Disposition': contentDisposition(mp3Filename(job.filename), { type: 'attachment' }),
  };
  if (ifNoneMatch && ifNoneMatch.split(',').some((t) => t.trim() === etag)) {
    res.status(304).set(headers).end();
    return;
  }
  // Checked before the audio headers are set: a 416 is a JSON error body, not audio/mpeg.
  let range: { start: number; end: number } | undefined;
  if (rangeHeader) {
    const ranges = parseRange(info.size, rangeHeader, { combine: true });
    if (ranges === -1) throw rangeNotSatisfiable(info.size);
    if (Array.isArray(ranges) && ranges.type === 'bytes' && ranges.length === 1) range = ranges[0];
  }
  res.set(headers);
  const stream = await blobs.read('mp3s', job.mp3BlobId, range);
  if (range) {
    res.status(206).set({ 'Content-Range': `bytes ${range.start}-${range.end}/${info.size}`, 'Content-Length': String(range.end - range.start + 1) });
  } else {
    res.status(200).set('Content-Length', String(info.size));
  }
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}

/** Removes a job's files and then the job; each step is idempotent, so a retried DELETE finishes. */
export async function removeJobFiles(blobs: BlobStore, job: Job) {
  if (job.videoBlobId) await blobs.delete('videos', job.videoBlobId);
  if (job.mp3BlobId) await blobs.delete('mp3s', job.mp3BlobId);
}
