// `npm start` on a terminal (a pseudo-terminal from util-linux `script`): coloured, readable log
// lines (pino-pretty) instead of JSON, and the web page and the API description beside the functions.
// (Piped, it prints JSON lines: test/e2e.test.ts parses them.)
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from './support/net';
import { eventually } from './support/stack';

describe('npm start on a terminal', () => {
  let child: ChildProcess | undefined;
  afterAll(() => { child?.kill('SIGTERM'); });

  it('when its stdout is a terminal, then the lines are coloured text, and / and /openapi.json are served', async () => {
    const root = path.resolve(__dirname, '..');
    const port = await freePort();
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'npm-start-tty-'));
    // `timeout` bounds the server even if `script` does not pass the SIGTERM on.
    const command = `exec timeout 120 ${process.execPath} --import tsx scripts/start.ts`;
    child = spawn('script', ['-qec', command, '/dev/null'], {
      cwd: root,
      env: { PATH: process.env.PATH!, TERM: 'xterm', PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'info' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout!.on('data', (c: Buffer) => { output += c.toString(); });
    await eventually(async () => (output.includes('video2mp3 is up') ? true : undefined), 60_000, 'npm start');
    const line = output.split('\n').find((l) => l.includes('video2mp3 is up'))!;
    expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] /);
    expect(line).toContain('\u001b[32mINFO\u001b[39m: '); // green level, as pino-pretty colours it
    expect(output).not.toContain('{"level"');

    const page = await fetch(`http://127.0.0.1:${port}/`);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await page.text()).toContain('<label for="video">Video</label>');
    expect((await fetch(`http://127.0.0.1:${port}/app.js`)).status).toBe(200);
    expect(((await (await fetch(`http://127.0.0.1:${port}/openapi.json`)).json()) as { openapi: string }).openapi).toMatch(/^3\.1/);
  }, 90_000);
});
