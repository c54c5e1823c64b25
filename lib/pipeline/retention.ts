import type { Config } from '../core/config';
import { log } from '../core/log';
import type { BlobStore } from '../storage/blobs';
import type { Db } from '../storage/db';
import { deleteExpiredUploads } from './resumable';

export interface RetentionDeps {
  db: Db;
  blobs: BlobStore;
  config: Pick<Config, 'retention' | 'keepSource'>;
}

export interface Swept {
  /** Unfinished resumable uploads whose bytes were deleted. */
  uploads: number;
  /** Done jobs whose MP3 (and source, if kept) went; the jobs are now `expired`. */
  mp3s: number;
  /** Failed jobs whose source video went. */
  sources: number;
  /**
   * Done jobs whose source video was still stored: the converter stopped (a crash, a kill) between
   * marking the job done and removing its video, and a later delivery of the job may never come.
   */
  doneSources: number;
}

/** Rows handled per sweep and kind: a backlog is worked off over several ticks rather than in one long one. */
const batch = 200;

/**
 * Deletes what is kept no longer (config.retention): unfinished uploads past UPLOAD_EXPIRY_SECONDS,
 * MP3s older than MP3_RETENTION_SECONDS (their jobs stay listable as `expired`, and the MP3 answers
 * 410), the sources of jobs that failed over a day ago, and (unless KEEP_SOURCE) any source a done job
 * still has. Blobs go before the row changes, and every step is safe to repeat, so a sweep that dies
 * part-way is finished by the next one.
 */
export async function sweepExpired(deps: RetentionDeps, now = Date.now()): Promise<Swept> {
  const { db, blobs, config } = deps;
  const uploads = await deleteExpiredUploads(deps, now);

  const done = await db('jobs').where({ status: 'done' })
    .andWhere('updated_at', '<', now - config.retention.mp3Seconds * 1000).limit(batch);
  for (const job of done) {
    if (job.mp3_blob_id) await blobs.delete('mp3s', job.mp3_blob_id);
    if (job.video_blob_id) await blobs.delete('videos', job.video_blob_id);
    await db('jobs').where({ id: job.id, status: 'done' })
      .update({ status: 'expired', mp3_blob_id: null, video_blob_id: null, updated_at: now });
  }

  const failed = await db('jobs').where({ status: 'failed' }).whereNotNull('video_blob_id')
    .andWhere('updated_at', '<', now - config.retention.failedSourceSeconds * 1000).limit(batch);
  for (const job of failed) {
    await blobs.delete('videos', job.video_blob_id);
    await db('jobs').where({ id: job.id }).update({ video_blob_id: null });
  }

  // Nothing reads a done job's source any more; removing it twice (here and in the converter) is harmless.
  const leftovers = config.keepSource ? [] : await db('jobs').where({ status: 'done' }).whereNotNull('video_blob_id').limit(batch);
  for (const job of leftovers) {
    await blobs.delete('videos', job.video_blob_id);
    await db('jobs').where({ id: job.id, video_blob_id: job.video_blob_id }).update({ video_blob_id: null });
  }

  const swept = { uploads, mp3s: done.length, sources: failed.length, doneSources: leftovers.length };
  if (uploads + done.length + failed.length + leftovers.length > 0) log.info(swept, 'retention sweep removed expired files');
  return swept;
}
