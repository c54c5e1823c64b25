import * as ff from '@google-cloud/functions-framework';
import { z } from 'zod';
import { getBlobs } from '../../lib/blobs';
import { getConfig } from '../../lib/config';
import { getDb } from '../../lib/db';
import { decodeCursor, encodeCursor, jobView, removeJobFiles, sendMp3 } from '../../lib/downloads';
import { badRequest, notFound } from '../../lib/errors';
import { createRouter, handle } from '../../lib/http';
import { deleteJob, findJob, getOwnedJob, listJobs } from '../../lib/jobs';
import { verifyDownloadLink } from '../../lib/links';
import { authenticate } from '../../lib/tokens';

const router = createRouter();
const pageQuery = z.object({ limit: z.coerce.number().int().min(1).max(100).default(20), cursor: z.string().max(100).optional() });

router.get('/jobs', async (req, res) => {
  const claims = authenticate(req.headers.authorization);
  const query = pageQuery.safeParse(req.query);
  if (!query.success) throw badRequest('limit must be 1–100 and cursor a value from a previous page');
  const before = query.data.cursor === undefined ? undefined : decodeCursor(query.data.cursor);
  if (query.data.cursor !== undefined && !before) throw badRequest('cursor is not a value from a previous page');
  const { jobs, more } = await listJobs(await getDb(), claims.sub, { limit: query.data.limit, before });
  const last = jobs.at(-1);
  res.json({ jobs: jobs.map((j) => jobView(j, getConfig())), nextCursor: more && last ? encodeCursor(last) : null });
});

router.get('/jobs/:id', async (req, res) => {
  const claims = authenticate(req.headers.authorization);
  res.set('Cache-Control', 'no-store').json(jobView(await getOwnedJob(await getDb(), req.params.id, claims.sub), getConfig()));
});

router.get('/jobs/:id/mp3', async (req, res) => {
  const claims = authenticate(req.headers.authorization);
  const job = await getOwnedJob(await getDb(), req.params.id, claims.sub);
  await sendMp3(req.get('range'), req.get('if-none-match'), res, await getBlobs(), job);
});

router.delete('/jobs/:id', async (req, res) => {
  const claims = authenticate(req.headers.authorization);
  const db = await getDb();
  const job = await getOwnedJob(db, req.params.id, claims.sub);
  await removeJobFiles(await getBlobs(), job);
  await deleteJob(db, job.id);
  res.status(204).end();
});

router.get('/links/:token', async (req, res) => {
  const job = await findJob(await getDb(), verifyDownloadLink(req.params.token));
  if (!job) throw notFound('job');
  await sendMp3(req.get('range'), req.get('if-none-match'), res, await getBlobs(), job);
});

ff.http('download', handle(router));
