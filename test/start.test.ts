// `npm start` as an operator stops it: npm's own PID stands for the whole stack. Signals reach the
// stack (one node process under npm, no sh or tsx in between), and a `kill -9` of npm, which forwards
// nothing, still takes the stack down, so the next `npm start` finds its port free.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { answers, npmStart, type NpmStart } from './support/npm-start';
import { freePort } from './support/net';
import { eventually } from './support/stack';

describe('npm start and its process', () => {
  const started: NpmStart[] = [];
  afterEach(() => {
    for (const s of started.splice(0)) {
      try { process.kill(-s.child.pid!, 'SIGKILL'); } catch { /* already gone */ }
    }
  });

  it.each(['SIGTERM', 'SIGINT', 'SIGKILL'] as const)('when npm itself gets %s, then the stack stops and npm start on the same port works again', async (signal) => {
    const port = await freePort();
    const env = { DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'npm-start-')) };
    const first = await npmStart(env, port);
    started.push(first);
    expect(await answers(first.url)).toBe(true);
    process.kill(first.child.pid!, signal);
    await eventually(async () => ((await answers(first.url)) ? undefined : true), 15_000, 'the port to be free');
    const second = await npmStart(env, port);
    started.push(second);
    expect(await answers(second.url)).toBe(true);
    expect(second.output()).not.toContain('EADDRINUSE');
  });
});
