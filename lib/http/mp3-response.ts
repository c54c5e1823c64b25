import { create as contentDisposition } from 'content-disposition';
import type { Response } from 'express';
import parseRange from 'range-parser';
import { ConflictError, GoneError, NotFoundError, RangeNotSatisfiableError } from '../core/errors';
import { mp3Filename } from '../pipeline/filenames';
import type { Job } from '../pipeline/jobs';
import type { BlobStore } from '../storage/blobs';

/**
 * Streams a job's MP3 with ETag, conditional GET, and single byte ranges (206); several ranges are
 * answered with the whole file, which RFC 9110 allows.
 */
export async function sendMp3(rangeHeader: string | undefined, ifNoneMatch: string | undefined, res: Response, blobs: BlobStore, job: Job) {
  if (job.status === 'expired') throw new GoneError('expired', 'the MP3 was deleted when its retention period ended; upload the video again to convert it anew');
  if (job.status !== 'done' || !job.mp3BlobId) throw new ConflictError(`the MP3 is not ready: the job is ${job.status}`);
  const info = await blobs.stat('mp3s', job.mp3BlobId);
  if (!info) throw new NotFoundError('file');
  const etag = `"${info.sha256}"`;
  res.set({
    'Content-Type': 'audio/mpeg',
    'Accept-Ranges': 'bytes',
    ETag: etag,
    'Cache-Control': 'private, max-age=0, must-revalidate',
    'Content-Disposition': contentDisposition(mp3Filename(job.filename), { type: 'attachment' }),
  });
  if (ifNoneMatch && ifNoneMatch.split(',').some((t) => t.trim() === etag)) {
    res.status(304).end();
    return;
  }
  let range: { start: number; end: number } | undefined;
  if (rangeHeader) {
    const ranges = parseRange(info.size, rangeHeader, { combine: true });
    if (ranges === -1) throw new RangeNotSatisfiableError(info.size);
    if (Array.isArray(ranges) && ranges.type === 'bytes' && ranges.length === 1) range = ranges[0];
  }
  const stream = await blobs.read('mp3s', job.mp3BlobId, range);
  if (range) {
    res.status(206).set({ 'Content-Range': `bytes ${range.start}-${range.end}/${info.size}`, 'Content-Length': String(range.end - range.start + 1) });
  } else {
    res.status(200).set('Content-Length', String(info.size));
  }
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}
