import { createHash } from 'node:crypto';
import type { Config } from '../core/config';
import { NotFoundError } from '../core/errors';
import { id3HeaderBytes, id3TagLength, readMp3Tag, type Mp3Tag } from '../media/tag-reader';
import type { BlobStore } from '../storage/blobs';
import type { Db } from '../storage/db';
import { mp3Filename } from './filenames';
import { findJob, listDoneJobs, type Job } from './jobs';
import { renderFeed } from './feed-rss';

/** A feed lists the newest MP3s; older ones stay downloadable from the job list. */
export const maxFeedItems = 200;
/** The most of an MP3's head read for its tag: a cover is at most 200 KB, chapters a few KB. */
export const maxTagBytes = 1024 * 1024;
// Tags are read a few at a time: a feed of many MP3s should not open all their streams at once.
const tagReadsAtOnce = 4;

/** The public URL of a feed; everything under it is reached with its token alone. */
export const feedUrl = (config: Pick<Config, 'downloadUrl'>, token: string) => `${config.downloadUrl}/feed/${token}`;

/**
 * The version of a feed: changes when an MP3 is added, finishes, leaves (expired, deleted) or the
 * token is rotated, and only then. Computed from the job rows, before any MP3 is read, so a podcast
 * app's poll that finds nothing new costs one query.
 */
export function feedEtag(feed: { createdAt: number }, jobs: Job[]): string {
  const hash = createHash('sha256').update(`v1:${feed.createdAt}`);
  for (const job of jobs) hash.update(`|${job.id}:${job.updatedAt}`);
  return hash.digest('base64url').slice(0, 32);
}

/** The done jobs a feed lists. */
export const feedJobs = (db: Db, ownerId: string) => listDoneJobs(db, ownerId, maxFeedItems);

/** A done job of the feed's owner, still holding its MP3; 404 otherwise (as for a job that never was). */
export async function getFeedJob(db: Db, ownerId: string, jobId: string): Promise<Job> {
  const job = await findJob(db, jobId);
  if (!job || job.ownerId !== ownerId || job.status !== 'done' || !job.mp3BlobId) throw new NotFoundError('episode');
  return job;
}

async function readBytes(blobs: BlobStore, blobId: string, start: number, end: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of await blobs.read('mp3s', blobId, { start, end })) parts.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(parts);
}

/**
 * The ID3v2 tag of a job's MP3: only the tag's bytes are read, at most maxTagBytes of them; an MP3
 * without a tag, or with a larger one, shows no cover or chapters.
 */
export async function readJobTag(blobs: BlobStore, job: Job): Promise<Mp3Tag> {
  const none: Mp3Tag = { chapters: [] };
  if (!job.mp3BlobId || (job.mp3Bytes ?? 0) < id3HeaderBytes) return none;
  const length = id3TagLength(await readBytes(blobs, job.mp3BlobId, 0, id3HeaderBytes - 1));
  if (length === 0 || length > maxTagBytes || length > (job.mp3Bytes ?? 0)) return none;
  return readMp3Tag(await readBytes(blobs, job.mp3BlobId, 0, length - 1));
}

/** The chapters of an MP3 in the Podcasting 2.0 JSON chapters format. */
export function chaptersJson(tag: Mp3Tag) {
  return {
    version: '1.2.0',
    chapters: tag.chapters.map((c) => ({ startTime: c.startSeconds, ...(c.endSeconds !== undefined ? { endTime: c.endSeconds } : {}), title: c.title })),
  };
}

/** Runs `fn` over `items`, `n` at a time, keeping their order. */
async function mapLimited<T, R>(items: T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** The RSS document of a feed, one item per job (newest first), with each MP3's cover and chapters. */
export async function buildFeed(blobs: BlobStore, config: Pick<Config, 'downloadUrl' | 'publicUrl'>, token: string, jobs: Job[]): Promise<string> {
  const base = feedUrl(config, token);
  const items = await mapLimited(jobs, tagReadsAtOnce, async (job) => {
    const tag = await readJobTag(blobs, job);
    return {
      title: tag.title ?? job.options.title ?? mp3Filename(job.filename).replace(/\.mp3$/i, ''),
      guid: `video2mp3:job:${job.id}`,
      pubDate: new Date(job.createdAt),
      durationSeconds: job.durationSeconds ?? 0,
      enclosure: { url: `${base}/${job.id}.mp3`, length: job.mp3Bytes ?? 0 },
      ...(tag.cover ? { imageUrl: `${base}/${job.id}/cover` } : {}),
      ...(tag.chapters.length > 0 ? { chaptersUrl: `${base}/${job.id}/chapters.json` } : {}),
    };
  });
  return renderFeed({
    title: 'video2mp3',
    description: 'Your converted MP3s, newest first. This feed is private: anyone with its URL can listen.',
    link: config.publicUrl,
    selfUrl: base,
    items,
  });
}
