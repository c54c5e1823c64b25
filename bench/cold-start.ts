// `npm run bench` (second part): cold start of each bundled HTTP function, from `node index.js` to the
// first answer of a real route, on the embedded backends, run as its image runs it (bench/image.ts: the
// image's node flags and environment, the code cache made under them). Runs interleaved (auth, upload,
// download, auth, …) so a busy machine slows every function alike, and prints medians against the
// 250 ms target. Run `npm run build` first. A bare node HTTP server, started the same way, is measured
// alongside as the floor: what any node function pays on this machine before its own code runs, so
// each function's time over it is what its bundle costs.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { imageBundle, imageRuntime, removeImageBundles } from './image';
import { median } from './run';

const root = path.resolve(__dirname, '..');
const runs = Number(process.env.COLD_RUNS ?? 7);
const targetMs = 250;

interface Probe {
  fn: 'auth' | 'upload' | 'download' | 'node';
  route: string;
  request: (base: string, token: string) => Promise<Response>;
}

const clip = Buffer.from('not a video, but the route reads it, sniffs it and answers 415');
/** The floor: node with the image's flags, serving an empty answer from node:http, nothing loaded. */
const bareServer = "require('node:http').createServer((req, res) => res.end()).listen(Number(process.env.PORT))";
const floor: Probe = { fn: 'node', route: 'GET / (bare node:http)', request: (base) => fetch(`${base}/`) };

const probes: Probe[] = [
  { fn: 'auth', route: 'POST /login', request: (base) => fetch(`${base}/login`, { method: 'POST', headers: { authorization: `Basic ${Buffer.from('bench@example.com:bench password').toString('base64')}` } }) },
  // Login spends ~80 ms in scrypt by design (lib/auth/passwords.ts); the key route shows auth's start-up without it.
  { fn: 'auth', route: 'GET /.well-known/jwks.json', request: (base) => fetch(`${base}/.well-known/jwks.json`) },
  { fn: 'upload', route: 'POST / (415)', request: (base, token) => fetch(`${base}/`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'video/mp4', 'x-filename': 'a.mp4' }, body: clip }) },
  { fn: 'download', route: 'GET /jobs', request: (base, token) => fetch(`${base}/jobs`, { headers: { authorization: `Bearer ${token}` } }) },
];

let nextPort = 19_100;

/** Starts a bundle (undefined: the bare server), polls its route until it answers, and returns the time from spawn to that answer. */
async function coldStart(probe: Probe, bundle: string | undefined, dataDir: string, token: string): Promise<{ ms: number; status: number }> {
  const port = nextPort++;
  const { flags, env } = imageRuntime();
  const started = performance.now();
  const child = spawn(process.execPath, [...flags, ...(bundle ? [path.join(bundle, 'index.js')] : ['-e', bareServer])], {
    env: { ...process.env, ...env, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    for (;;) {
      try {
        const res = await probe.request(`http://127.0.0.1:${port}`, token);
        await res.arrayBuffer();
        return { ms: performance.now() - started, status: res.status };
      } catch {
        if (performance.now() - started > 20_000) throw new Error(`${probe.fn} did not answer within 20 s`);
        await new Promise((r) => setTimeout(r, 2));
      }
    }
  } finally {
    child.kill('SIGKILL');
  }
}

/** Signs the bench user up through a running auth bundle and returns a token (keys land in dataDir). */
async function prepare(authBundle: string, dataDir: string): Promise<string> {
  const port = nextPort++;
  const { flags, env } = imageRuntime();
  const child = spawn(process.execPath, [...flags, path.join(authBundle, 'index.js')], { env: { ...process.env, ...env, PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: 'warn' }, stdio: 'ignore' });
  try {
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      try {
        await fetch(`${base}/signup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'bench@example.com', password: 'bench password' }) });
        break;
      } catch {
        if (i > 2000) throw new Error('auth did not start');
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    const login = await fetch(`${base}/login`, { method: 'POST', headers: { authorization: `Basic ${Buffer.from('bench@example.com:bench password').toString('base64')}` } });
    return ((await login.json()) as { token: string }).token;
  } finally {
    child.kill('SIGKILL');
  }
}

export async function runColdStartBench(): Promise<void> {
  if (!existsSync(path.join(root, 'dist/auth/index.js'))) throw new Error('run `npm run build` first');
  const dataDir = mkdtempSync(path.join(tmpdir(), 'video2mp3-cold-'));
  try {
    const bundles = new Map(['auth', 'upload', 'download'].map((fn) => [fn, imageBundle(fn)]));
    const token = await prepare(bundles.get('auth')!, dataDir);
    const key = (p: Probe) => `${p.fn} ${p.route}`;
    const times = new Map<string, number[]>([floor, ...probes].map((p) => [key(p), []]));
    const statuses = new Map<string, number>();
    for (let i = 0; i < runs; i++) {
      for (const probe of [floor, ...probes]) {
        const { ms, status } = await coldStart(probe, bundles.get(probe.fn), dataDir, token);
        times.get(key(probe))!.push(ms);
        statuses.set(key(probe), status);
      }
    }
    console.log(`\ncold start: spawn → first answer of a real route (${runs} interleaved runs each, as in the image: ${imageRuntime().describe}; target ≤ ${targetMs} ms median)`);
    console.log('function   route                       status  median   min      max      over node  target');
    const floorMs = median(times.get(key(floor))!);
    for (const probe of [floor, ...probes]) {
      const xs = times.get(key(probe))!;
      const m = median(xs);
      const over = probe === floor ? 'floor' : `+${(m - floorMs).toFixed(0)} ms`;
      console.log(
        `${probe.fn.padEnd(10)} ${probe.route.padEnd(27)} ${String(statuses.get(key(probe))).padEnd(7)} ${`${m.toFixed(0)} ms`.padEnd(8)} ${`${Math.min(...xs).toFixed(0)} ms`.padEnd(8)} ${`${Math.max(...xs).toFixed(0)} ms`.padEnd(8)} ${over.padEnd(10)} ${probe === floor ? '' : m <= targetMs ? 'met' : 'missed'}`,
      );
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
    removeImageBundles();
  }
}

