// The download function's podcast-feed routes (mounted at /feed): the user's private feed, created or
// rotated, shown and revoked with their token, and what a podcast app fetches with the feed's URL alone.
import type { Response } from 'express';
import { findFeed, findFeedByToken, recordFeedVersion, revokeFeed, rotateFeed } from '../auth/feeds';
import { getConfig } from '../core/config';
import { NotFoundError } from '../core/errors';
import { buildFeed, chaptersJson, feedEtag, feedJobs, feedUrl, getFeedJob, readJobTag } from '../pipeline/feed';
import type { Job } from '../pipeline/jobs';
import { getBlobs } from '../storage/blobs';
import { getDb } from '../storage/db';
import { isNotModified } from './conditional';
import { sendMp3 } from './mp3-response';
import { createRouter, requireUser, userOf } from './router';

/** Answers the front cover in a done job's MP3 tag, or 404 when it has none. */
export async function sendCover(res: Response, job: Job): Promise<void> {
  const { cover } = await readJobTag(await getBlobs(), job);
  if (!cover) throw new NotFoundError('cover');
  res.set('Cache-Control', 'private, max-age=86400').type(cover.mime).send(Buffer.from(cover.data));
}

export const feedRouter = createRouter();

// The user's private podcast feed: created or rotated, shown (without its URL: only a hash is kept), revoked.
feedRouter.post('/', requireUser, async (_req, res) => {
  const { token, createdAt } = await rotateFeed(await getDb(), userOf(res).sub);
  res.status(201).set('Cache-Control', 'no-store').json({ url: feedUrl(getConfig(), token), createdAt: new Date(createdAt).toISOString() });
});

feedRouter.get('/', requireUser, async (_req, res) => {
  const feed = await findFeed(await getDb(), userOf(res).sub);
  if (!feed) throw new NotFoundError('feed');
  res.set('Cache-Control', 'no-store').json({ createdAt: new Date(feed.createdAt).toISOString() });
});

feedRouter.delete('/', requireUser, async (_req, res) => {
  if (!(await revokeFeed(await getDb(), userOf(res).sub))) throw new NotFoundError('feed');
  res.status(204).end();
});

// What a podcast app fetches with the feed's URL alone: the RSS, each MP3, its cover and chapters.
const openFeed = async (token: string) => (await findFeedByToken(await getDb(), token)) ?? Promise.reject(new NotFoundError('feed'));

feedRouter.get('/:token', async (req, res) => {
  const db = await getDb();
  const opened = await openFeed(req.params.token);
  const jobs = await feedJobs(db, opened.ownerId);
  const feed = await recordFeedVersion(db, opened, feedEtag(opened, jobs));
  const etag = `"${feed.etag}"`;
  res.set({ ETag: etag, 'Last-Modified': new Date(feed.modifiedAt).toUTCString(), 'Cache-Control': 'private, no-cache' });
  if (isNotModified(req, etag, new Date(feed.modifiedAt))) return void res.status(304).end();
  res.type('application/rss+xml; charset=utf-8').send(await buildFeed(await getBlobs(), getConfig(), req.params.token, jobs));
});

feedRouter.get('/:token/:jobId.mp3', async (req, res) => {
  const job = await getFeedJob(await getDb(), (await openFeed(req.params.token)).ownerId, req.params.jobId);
  await sendMp3(req.get('range'), req.get('if-none-match'), res, await getBlobs(), job);
});

feedRouter.get('/:token/:jobId/cover', async (req, res) => {
  const job = await getFeedJob(await getDb(), (await openFeed(req.params.token)).ownerId, req.params.jobId);
  await sendCover(res, job);
});

feedRouter.get('/:token/:jobId/chapters.json', async (req, res) => {
  const job = await getFeedJob(await getDb(), (await openFeed(req.params.token)).ownerId, req.params.jobId);
  const tag = await readJobTag(await getBlobs(), job);
  if (tag.chapters.length === 0) throw new NotFoundError('chapters');
  res.set('Cache-Control', 'private, max-age=86400').type('application/json+chapters').send(JSON.stringify(chaptersJson(tag)));
});

