import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { eventually } from './stack';

const root = path.resolve(__dirname, '../..');

export interface NpmStart {
  /** npm's own process; it leads a process group of its own. */
  child: ChildProcess;
  url: string;
  output(): string;
  /** Resolves when npm has exited. */
  exited: Promise<void>;
}

/**
 * Runs `npm start` as a person does, in a process group of its own (so a test can kill the group, or
 * only npm), with the given environment on top of PATH, and waits until it says it is up. Its metrics
 * listener takes a free port unless `env` names one (tests run side by side).
 */
export async function npmStart(env: Record<string, string>, port: number): Promise<NpmStart> {
  let output = '';
  const child = spawn('npm', ['start'], {
    cwd: root,
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', PORT: String(port), METRICS_PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdout!.on('data', (c: Buffer) => { output += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { output += c.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`npm start exited with ${child.exitCode}:\n${output}`);
    return output.includes('video2mp3 is up') ? true : undefined;
  }, 60_000, 'npm start');
  return { child, url: `http://127.0.0.1:${port}`, output: () => output, exited };
}

/** True while something answers on the port. */
export async function answers(url: string): Promise<boolean> {
  try {
    await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
    return true;
  } catch {
    return false;
  }
}
