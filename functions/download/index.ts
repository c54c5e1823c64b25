import { findFeed, findFeedByToken, recordFeedVersion, revokeFeed, rotateFeed } from '../../lib/auth/feeds';
import { verifyDownloadLink } from '../../lib/auth/links';
import { getConfig } from '../../lib/core/config';
import { NotFoundError } from '../../lib/core/errors';
import { isNotModified } from '../../lib/http/conditional';
import { sendMp3 } from '../../lib/http/mp3-response';
import { createRouter, handle, requireUser, userOf } from '../../lib/http/router';
import { webhookViews } from '../../lib/mail/webhook-outbox';
import { encodeCursor, jobView, parsePage, removeJobFiles } from '../../lib/pipeline/downloads';
import { buildFeed, chaptersJson, feedEtag, feedJobs, feedUrl, getFeedJob, readJobTag } from '../../lib/pipeline/feed';
import { deleteJob, findJob, getOwnedJob, listJobs } from '../../lib/pipeline/jobs';
import { getBlobs } from '../../lib/storage/blobs';
import { getDb } from '../../lib/storage/db';

const router = createRouter();
router.use('/jobs', requireUser);

router.get('/jobs', async (req, res) => {
  const db = await getDb();
  const { jobs, more } = await listJobs(db, userOf(res).sub, parsePage(req.query));
  const webhooks = await webhookViews(db, jobs);
  const last = jobs.at(-1);
  res.json({ jobs: jobs.map((j) => jobView(j, getConfig(), webhooks.get(j.id))), nextCursor: more && last ? encodeCursor(last) : null });
});

router.get('/jobs/:id', async (req, res) => {
  const db = await getDb();
  const job = await getOwnedJob(db, req.params.id, userOf(res).sub);
  const webhooks = await webhookViews(db, [job]);
  res.set('Cache-Control', 'no-store').json(jobView(job, getConfig(), webhooks.get(job.id)));
});

router.get('/jobs/:id/mp3', async (req, res) => {
  const job = await getOwnedJob(await getDb(), req.params.id, userOf(res).sub);
  await sendMp3(req.get('range'), req.get('if-none-match'), res, await getBlobs(), job);
});

// What the page shows of a done job besides playing it: the cover and chapters in its MP3's tag.
router.get('/jobs/:id/cover', async (req, res) => {
  const { cover } = await readJobTag(await getBlobs(), await getFeedJob(await getDb(), userOf(res).sub, req.params.id));
  if (!cover) throw new NotFoundError('cover');
  res.set('Cache-Control', 'private, max-age=86400').type(cover.mime).send(Buffer.from(cover.data));
});

router.get('/jobs/:id/chapters', async (req, res) => {
  const tag = await readJobTag(await getBlobs(), await getFeedJob(await getDb(), userOf(res).sub, req.params.id));
  res.set('Cache-Control', 'private, max-age=86400').json(chaptersJson(tag));
});

router.delete('/jobs/:id', async (req, res) => {
  const db = await getDb();
  const job = await getOwnedJob(db, req.params.id, userOf(res).sub);
  await removeJobFiles(await getBlobs(), job);
  await deleteJob(db, job.id);
  res.status(204).end();
});

router.get('/links/:token', async (req, res) => {
  const job = await findJob(await getDb(), verifyDownloadLink(req.params.token));
  if (!job) throw new NotFoundError('job');
  await sendMp3(req.get('range'), req.get('if-none-match'), res, await getBlobs(), job);
});

// The user's private podcast feed: created or rotated, shown (without its URL: only a hash is kept), revoked.
router.post('/feed', requireUser, async (_req, res) => {
  const { token, createdAt } = await rotateFeed(await getDb(), userOf(res).sub);
  res.status(201).set('Cache-Control', 'no-store').json({ url: feedUrl(getConfig(), token), createdAt: new Date(createdAt).toISOString() });
});

router.get('/feed', requireUser, async (_req, res) => {
  const feed = await findFeed(await getDb(), userOf(res).sub);
  if (!feed) throw new NotFoundError('feed');
  res.set('Cache-Control', 'no-store').json({ createdAt: new Date(feed.createdAt).toISOString() });
});

router.delete('/feed', requireUser, async (_req, res) => {
  if (!(await revokeFeed(await getDb(), userOf(res).sub))) throw new NotFoundError('feed');
  res.status(204).end();
});

// What a podcast app fetches with the feed's URL alone: the RSS, each MP3, its cover and chapters.
const openFeed = async (token: string) => (await findFeedByToken(await getDb(), token)) ?? Promise.reject(new NotFoundError('feed'));

router.get('/feed/:token', async (req, res) => {
  const db = await getDb();
  const opened = await openFeed(req.params.token);
  const jobs = await feedJobs(db, opened.ownerId);
  const feed = await recordFeedVersion(db, opened, feedEtag(opened, jobs));
  const etag = `"${feed.etag}"`;
  res.set({ ETag: etag, 'Last-Modified': new Date(feed.modifiedAt).toUTCString(), 'Cache-Control': 'private, no-cache' });
  if (isNotModified(req, etag, new Date(feed.modifiedAt))) return void res.status(304).end();
  res.type('application/rss+xml; charset=utf-8').send(await buildFeed(await getBlobs(), getConfig(), req.params.token, jobs));
});

router.get('/feed/:token/:jobId.mp3', async (req, res) => {
  const job = await getFeedJob(await getDb(), (await openFeed(req.params.token)).ownerId, req.params.jobId);
  await sendMp3(req.get('range'), req.get('if-none-match'), res, await getBlobs(), job);
});

router.get('/feed/:token/:jobId/cover', async (req, res) => {
  const job = await getFeedJob(await getDb(), (await openFeed(req.params.token)).ownerId, req.params.jobId);
  const { cover } = await readJobTag(await getBlobs(), job);
  if (!cover) throw new NotFoundError('cover');
  res.set('Cache-Control', 'private, max-age=86400').type(cover.mime).send(Buffer.from(cover.data));
});

router.get('/feed/:token/:jobId/chapters.json', async (req, res) => {
  const job = await getFeedJob(await getDb(), (await openFeed(req.params.token)).ownerId, req.params.jobId);
  const tag = await readJobTag(await getBlobs(), job);
  if (tag.chapters.length === 0) throw new NotFoundError('chapters');
  res.set('Cache-Control', 'private, max-age=86400').type('application/json+chapters').send(JSON.stringify(chaptersJson(tag)));
});

export const handler = handle(router);
