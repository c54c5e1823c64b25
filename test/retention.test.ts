// Retention: the maintenance tick on convert's /maintenance sweeps old MP3s, failed jobs' sources, done
// jobs' leftover sources and unfinished uploads; a swept job stays listable as `expired` and its MP3 answers 410.
import { CloudEvent, HTTP } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getBlobs } from '../lib/storage/blobs';
import { getDb } from '../lib/storage/db';
import { maintenanceTick } from '../lib/messaging/events';
import { getBroker } from '../lib/messaging/queue';
import { readFixture } from './fixtures';
import { backends, eventually, newUser, startStack, videoForm, type Stack, type TestUser } from './support/stack';

const day = 86_400_000;

async function tick(stack: Stack, event: CloudEvent<object>) {
  const { headers, body } = HTTP.binary(event);
  const res = await fetch(`${stack.internalUrl}/convert/maintenance`, { method: 'POST', headers: headers as Record<string, string>, body: body as string });
  expect(res.status).toBe(200);
  return ((await res.json()) as { swept: { uploads: number; mp3s: number; sources: number; doneSources: number } }).swept;
}

describe.each(backends())('retention on $name backends', ({ env }) => {
  let stack: Stack;
  let user: TestUser;

  beforeAll(async () => {
    stack = await startStack(env, { sources: 'video' });
    await (await getBroker()).purge('video');
    user = await newUser(stack);
  });
  afterAll(async () => {
    await (await getBroker()).purge('mp3');
    await stack.close();
  });

  const upload = async (fixture: Parameters<typeof readFixture>[0], filename: string) => {
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(readFixture(fixture), filename) });
    expect(res.status).toBe(202);
    const { jobId } = (await res.json()) as { jobId: string };
    return eventually(async () => {
      const row = await (await getDb())('jobs').where({ id: jobId }).first();
      // Its outcome published too: that write moves updated_at, which the tests then set back in time.
      return (row.status === 'done' || row.status === 'failed') && row.published_at ? row : undefined;
    }, 60_000, `job ${jobId} to end`);
  };

  it('when an MP3 is older than MP3_RETENTION_SECONDS, then the tick deletes it, the job lists as expired and the MP3 answers 410', async () => {
    const job = await upload('mp4', 'old.mp4');
    expect(job.status).toBe('done');
    const fresh = await upload('flv', 'fresh.flv');
    const db = await getDb();
    await db('jobs').where({ id: job.id }).update({ updated_at: Date.now() - stack.config.retention.mp3Seconds * 1000 - 1000 });

    const swept = await tick(stack, maintenanceTick());
    expect(swept.mp3s).toBe(1);
    expect(await (await getBlobs()).stat('mp3s', job.mp3_blob_id)).toBeUndefined();
    const mp3 = await fetch(`${stack.url}/download/jobs/${job.id}/mp3`, { headers: user.auth });
    expect(mp3.status).toBe(410);
    expect(((await mp3.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'expired', message: expect.stringMatching(/retention/) });
    const list = (await (await fetch(`${stack.url}/download/jobs`, { headers: user.auth })).json()) as { jobs: { jobId: string; status: string }[] };
    expect(list.jobs.find((j) => j.jobId === job.id)?.status).toBe('expired');
    expect((await fetch(`${stack.url}/download/jobs/${fresh.id}/mp3`, { headers: user.auth })).status).toBe(200);
  });

  it('when a done job still has its source (the converter stopped before removing it), then the tick removes the source and the MP3 stays', async () => {
    const job = await upload('mp4', 'left over.mp4');
    expect(job.status).toBe('done');
    const db = await getDb();
    // The converter removes the source just after marking the job done, when nothing stops it.
    await eventually(async () => ((await db('jobs').where({ id: job.id }).first()).video_blob_id === null ? true : undefined), 10_000, 'the converter to remove the source');
    // The state a kill between "done" and the removal leaves: the job done, its source still stored.
    const blobs = await getBlobs();
    const source = await blobs.put('videos', readFixture('mp4'), { owner: job.owner_id, filename: 'left over.mp4', contentType: 'video/mp4' });
    await db('jobs').where({ id: job.id }).update({ video_blob_id: source.id });

    const swept = await tick(stack, maintenanceTick());
    expect(swept.doneSources).toBe(1);
    expect(await blobs.stat('videos', source.id)).toBeUndefined();
    const row = await db('jobs').where({ id: job.id }).first();
    expect(row).toMatchObject({ status: 'done', video_blob_id: null });
    expect((await fetch(`${stack.url}/download/jobs/${job.id}/mp3`, { headers: user.auth })).status).toBe(200);
    expect((await tick(stack, maintenanceTick())).doneSources).toBe(0);
  });

  it('when a job failed over a day ago, then a PingSource tick deletes its source video and keeps the job', async () => {
    const job = await upload('no-audio', 'silent.mp4');
    expect(job.status).toBe('failed');
    expect(job.video_blob_id).toBeTruthy();
    const db = await getDb();
    await db('jobs').where({ id: job.id }).update({ updated_at: Date.now() - day - 1000 });

    // On Knative the tick comes from a PingSource, whose event type is its own.
    const ping = new CloudEvent({ type: 'dev.knative.sources.ping', source: '/apis/v1/namespaces/video2mp3/pingsources/maintenance', datacontenttype: 'application/json', data: {} });
    const swept = await tick(stack, ping);
    expect(swept.sources).toBe(1);
    expect(await (await getBlobs()).stat('videos', job.video_blob_id)).toBeUndefined();
    const view = (await (await fetch(`${stack.url}/download/jobs/${job.id}`, { headers: user.auth })).json()) as { status: string };
    expect(view.status).toBe('failed');
  });
});
