// The bundled functions (`node dist/<fn>/index.js`) as separate processes, each with the environment it
// gets on Knative (test/support/manifests.ts functionEnv plus what a cluster resolves differently).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { functionNames, type FunctionName } from '../../lib/core/config';
import { eventually } from './stack';

const root = path.resolve(__dirname, '../..');

/** Newest modification time of a file under `p` (or of `p` itself). */
function newest(p: string): number {
  if (!fs.existsSync(p)) return 0;
  const stat = fs.statSync(p);
  if (!stat.isDirectory()) return stat.mtimeMs;
  return Math.max(stat.mtimeMs, ...fs.readdirSync(p).map((n) => newest(path.join(p, n))));
}

/** Runs `npm run build` when a bundle is missing or older than the code it is built from. */
export function ensureBundles(): void {
  const bundles = functionNames.map((fn) => path.join(root, 'dist', fn, 'index.js'));
  const oldest = Math.min(...bundles.map((b) => (fs.existsSync(b) ? fs.statSync(b).mtimeMs : 0)));
  const sources = Math.max(...['functions', 'lib', 'build.mjs', 'package-lock.json'].map((p) => newest(path.join(root, p))));
  if (oldest > sources) return;
  const build = spawnSync(process.execPath, ['build.mjs'], { cwd: root, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}\n${build.stderr}`);
}

export interface RunningFunction {
  fn: FunctionName;
  port: number;
  url: string;
  /** The process's recent output, for failure messages. */
  logs(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const children = new Set<ChildProcess>();

/** Starts `dist/<fn>/index.js` on `port` with exactly `env` (plus PATH), and resolves once /healthz answers. */
export async function startBundle(fn: FunctionName, port: number, env: Record<string, string>): Promise<RunningFunction> {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), `bundle-${fn}-`));
  const child = spawn(process.execPath, [path.join(root, 'dist', fn, 'index.js')], {
    cwd, env: { PATH: process.env.PATH!, ...env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let tail = '';
  const keep = (c: Buffer) => { tail = (tail + c.toString()).slice(-10_000); };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => { children.delete(child); resolve(); }));
  const url = `http://127.0.0.1:${port}`;
  await eventually(async () => {
    if (child.exitCode !== null) throw new Error(`${fn} exited with ${child.exitCode}:\n${tail}`);
    return (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) || undefined;
  }, 30_000, `${fn} to listen`);
  return {
    fn, port, url,
    logs: () => tail,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      fs.rmSync(cwd, { recursive: true, force: true });
    },
  };
}

/** Kills whatever bundle is still running (for an exit path that cannot wait). */
export function killBundles(): void {
  for (const child of children) child.kill('SIGKILL');
}
