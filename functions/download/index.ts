import { verifyDownloadLink } from '../../lib/auth/links';
import { getConfig } from '../../lib/core/config';
import { NotFoundError } from '../../lib/core/errors';
import { feedRouter, sendCover } from '../../lib/http/feed-router';
import { sendMp3 } from '../../lib/http/mp3-response';
import { createRouter, handle, requireUser, userOf } from '../../lib/http/router';
import { webhookViews } from '../../lib/mail/webhook-outbox';
import { encodeCursor, jobView, parsePage, removeJobFiles } from '../../lib/pipeline/downloads';
import { chaptersJson, getFeedJob, readJobTag } from '../../lib/pipeline/feed';
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
  await sendCover(res, await getFeedJob(await getDb(), userOf(res).sub, req.params.id));
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

router.use('/feed', feedRouter);

export const handler = handle(router);
