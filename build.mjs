// Bundles every functions/<name>/index.ts into dist/<name>/index.js: one CommonJS file that registers
// the function and serves it with the framework copy it carries (one copy, so the function is registered
// in the same registry the server reads), runnable with plain
// `node dist/<name>/index.js`; and the web page (web/) into dist/web/. Prints each bundle's size; exits
// non-zero on any error.
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { bundleWeb } from './web/bundle.mjs';

const root = path.dirname(new URL(import.meta.url).pathname);
const names = fs.readdirSync(path.join(root, 'functions')).filter((n) => fs.existsSync(path.join(root, 'functions', n, 'index.ts')));

// knex requires every dialect it knows and mongodb its optional native helpers: none is used when
// deployed (MySQL via mysql2, MongoDB without compression or client-side encryption). better-sqlite3
// is the embedded default only, so images do not carry it.
const external = [
  'better-sqlite3', 'sqlite3', 'mariadb', 'mariadb/callback', 'pg', 'pg-native', 'pg-query-stream', 'tedious', 'oracledb', 'mysql', 'mssql',
  'kerberos', 'snappy', '@mongodb-js/zstd', 'mongodb-client-encryption', '@aws-sdk/credential-providers',
  'gcp-metadata', 'socks', 'aws4', '@ffmpeg.wasm/core-mt',
];

const shared = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: 'linked',
  // Minified: less source for V8 to compile at each cold start. keepNames, because error classes and
  // drivers' errors are told apart by name.
  minify: true,
  keepNames: true,
  legalComments: 'none',
  external,
  logLevel: 'warning',
  absWorkingDir: root,
};

const build = (name) => {
  const outdir = path.join(root, 'dist', name);
  const entries = [
    esbuild.build({
      ...shared,
      stdin: {
        contents: `import * as fn from './functions/${name}/index.ts';\nimport { serveFunction } from './lib/http/serve';\nvoid serveFunction(${JSON.stringify(name)}, fn.handler, (fn as { warmUp?: () => Promise<void> }).warmUp);\n`,
        resolveDir: root,
        sourcefile: `functions/${name}/entry.ts`,
        loader: 'ts',
      },
      outfile: path.join(outdir, 'index.js'),
    }),
  ];
  if (name === 'convert') {
    entries.push(esbuild.build({ ...shared, entryPoints: [path.join(root, 'lib/media/worker.ts')], outfile: path.join(outdir, 'transcode-worker.js') }));
  }
  return Promise.all(entries).then(() => name);
};

try {
  // Clear the old output before any build starts writing the new one.
  fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
  const [built] = await Promise.all([Promise.all(names.map(build)), bundleWeb(path.join(root, 'dist/web'))]);
  // Deployed, the download function serves the page too (lib/http/serve.ts).
  if (built.includes('download')) fs.cpSync(path.join(root, 'dist/web'), path.join(root, 'dist/download/web'), { recursive: true });
  if (built.includes('convert')) {
    // The wasm core is loaded from disk at run time (and by its own pthread workers), so it ships beside the bundle.
    fs.cpSync(path.join(root, 'node_modules/@ffmpeg.wasm/core-mt'), path.join(root, 'dist/convert/node_modules/@ffmpeg.wasm/core-mt'), { recursive: true });
  }
  console.log('bundle                    size');
  for (const name of built) {
    const file = path.join(root, 'dist', name, 'index.js');
    console.log(`${`dist/${name}/index.js`.padEnd(25)} ${(fs.statSync(file).size / 1024).toFixed(0).padStart(5)} KiB`);
  }
  console.log(`dist/web/app.js  ${(fs.statSync(path.join(root, 'dist/web/app.js')).size / 1024).toFixed(0)} KiB`);
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
}
