// How the benchmark runs a built function as its image does (Dockerfile): plain node with the image's
// NODE_OPTIONS and the flags its CMD gives before index.js (--enable-source-maps) as flags, and its
// NODE_ENV and GLIBC_TUNABLES in the environment, from a copy of dist/<function>
// whose V8 code cache is remade under those flags (V8 ignores a cache made under other flags).
// BENCH_NODE_FLAGS and BENCH_GLIBC_TUNABLES replace the image's values ('' for none), for A/B runs.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(__dirname, '..');
let dockerfileText: string | undefined;
const dockerfile = (): string => (dockerfileText ??= fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8'));

function imageEnvValue(name: string): string {
  return new RegExp(`^ENV ${name}=(\\S+)`, 'm').exec(dockerfile())?.[1] ?? '';
}

export interface ImageRuntime {
  /** Node flags, before the script. */
  flags: string[];
  /** Environment the image adds (merge into the child's). */
  env: Record<string, string>;
  /** For the bench's output. */
  describe: string;
}

/** The node flags in the image's CMD, before the script. */
function imageCmdFlags(): string[] {
  const cmd = /^CMD (\[.*\])$/m.exec(dockerfile())?.[1];
  if (!cmd) throw new Error('Dockerfile: no CMD in exec form');
  const args = JSON.parse(cmd) as string[];
  return args.slice(0, args.indexOf('index.js'));
}

export function imageRuntime(): ImageRuntime {
  const flags = [...(process.env.BENCH_NODE_FLAGS ?? imageEnvValue('NODE_OPTIONS')).split(' ').filter(Boolean), ...imageCmdFlags()];
  const tunables = process.env.BENCH_GLIBC_TUNABLES ?? imageEnvValue('GLIBC_TUNABLES');
  const env: Record<string, string> = { NODE_ENV: imageEnvValue('NODE_ENV'), ...(tunables ? { GLIBC_TUNABLES: tunables } : {}) };
  return { flags, env, describe: `node ${flags.join(' ') || '(no flags)'}, NODE_ENV=${env.NODE_ENV}${tunables ? `, GLIBC_TUNABLES=${tunables}` : ''}` };
}

/**
 * A copy of dist/<name> with its code cache remade under the image's runtime, as the image does; inside
 * dist/, so the embedded SQLite driver (not bundled) still resolves from the checkout's node_modules.
 * The caller removes it.
 */
export function imageBundle(name: string): string {
  const bundle = fs.mkdtempSync(path.join(root, 'dist', `bench-${name}-`));
  fs.cpSync(path.join(root, 'dist', name), bundle, { recursive: true });
  const { flags, env } = imageRuntime();
  const made = spawnSync(process.execPath, [...flags, 'index.js', '--make-code-cache'], { cwd: bundle, encoding: 'utf8', env: { ...process.env, ...env, LOG_LEVEL: 'warn' } });
  if (made.status !== 0) throw new Error(`dist/${name}: making the code cache failed: ${made.stderr}`);
  return bundle;
}

/** Removes every copy imageBundle made (also those a killed run left). */
export function removeImageBundles(): void {
  for (const d of fs.readdirSync(path.join(root, 'dist'))) if (d.startsWith('bench-')) fs.rmSync(path.join(root, 'dist', d), { recursive: true, force: true });
}
