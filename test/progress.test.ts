// Conversion progress in the job: while a long clip converts, GET /download/jobs/:id carries
// `progress` (0–100, rising) and `positionSeconds`; once done, neither.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { fixturesDir } from './fixtures';
import { newUser, startStack, videoForm, type Stack } from './support/stack';

describe('conversion progress', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({}, { sources: true });
  });
  afterAll(async () => {
    await stack.close();
  });

  it('when a 5-minute clip converts, then polling the job shows progress rising, then done without it', async () => {
    const user = await newUser(stack);
    const video = fs.readFileSync(path.join(fixturesDir, 'long-5min.mp4'));
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: user.auth, body: videoForm(video, 'long.mp4') });
    expect(res.status).toBe(202);
    const { statusUrl } = (await res.json()) as { statusUrl: string };

    const seen: { status: string; progress?: number; positionSeconds?: number }[] = [];
    const deadline = Date.now() + 120_000;
    for (;;) {
      const job = (await (await fetch(statusUrl, { headers: user.auth })).json()) as (typeof seen)[number];
      seen.push(job);
      if (job.status === 'done' || job.status === 'failed' || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(seen.at(-1)).toMatchObject({ status: 'done' });
    expect(seen.at(-1)).not.toHaveProperty('progress');
    const converting = seen.filter((j) => j.status === 'converting');
    for (const j of converting) {
      expect(j.progress).toBeGreaterThanOrEqual(0);
      expect(j.progress).toBeLessThanOrEqual(100);
      expect(Number.isInteger(j.progress)).toBe(true);
    }
    const moving = converting.filter((j) => j.progress! > 0);
    expect(moving.length, JSON.stringify(seen.slice(0, 5))).toBeGreaterThan(0);
    expect(moving.some((j) => j.positionSeconds! > 0 && j.positionSeconds! <= 300)).toBe(true);
    const values = converting.map((j) => j.progress!);
    expect(values).toEqual([...values].sort((a, b) => a - b)); // never goes back
  }, 150_000);
});
