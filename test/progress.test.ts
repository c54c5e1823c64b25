// Conversion progress in the job: while a long clip converts, GET /download/jobs/:id carries
// `progress` (0–100, rising) and `positionSeconds`; once done, neither. The clip is the 5-minute
// fixture played twelve times (native ffmpeg, stream copy): an hour takes several seconds to convert,
// long enough to see more than one of the once-a-second progress writes whatever the machine's speed.
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
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

  it('when an hour-long clip converts, then polling the job shows progress rising, then done without it', async () => {
    const user = await newUser(stack);
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'progress-')), 'long-60min.mp4');
    const made = spawnSync('ffmpeg', ['-v', 'error', '-y', '-stream_loop', '11', '-i', path.join(fixturesDir, 'long-5min.mp4'), '-c', 'copy', file], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    const video = fs.readFileSync(file);
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
    expect(new Set(moving.map((j) => j.progress)).size, JSON.stringify(seen.slice(0, 5))).toBeGreaterThan(1);
    expect(moving.some((j) => j.positionSeconds! > 0 && j.positionSeconds! <= 3600)).toBe(true);
    const values = converting.map((j) => j.progress!);
    expect(values).toEqual([...values].sort((a, b) => a - b)); // never goes back
  }, 150_000);
});
