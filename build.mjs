// Bundles every functions/<name>/index.ts into dist/<name>/function.js: one CommonJS file whose
// start() registers the function and serves it with the framework copy it carries (one copy, so the
// function is registered in the same registry the server reads). dist/<name>/index.js is the loader
// that starts it from V8's code cache (scripts/bundle-loader.cjs), made here too, so plain
// `node dist/<name>/index.js` runs it; and the web page (web/) into dist/web/. Prints each bundle's
// size; exits non-zero on any error.
import * as esbuild from 'esbuild';
import { spawnSync } from 'node:child_process';
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
  'gcp-metadata', 'socks', 'aws4',
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
  metafile: true,
  external,
  logLevel: 'warning',
  absWorkingDir: root,
};

/** Whether the function exports a `warmUp` to run once it listens (convert's converter instances). */
const hasWarmUp = (name) => /^export (async function|const) warmUp\b/m.test(fs.readFileSync(path.join(root, 'functions', name, 'index.ts'), 'utf8'));

const build = (name) => {
  const outdir = path.join(root, 'dist', name);
  const entries = [
    esbuild.build({
      ...shared,
      stdin: {
        contents: `import * as fn from './functions/${name}/index.ts';\nimport { serveFunction } from './lib/http/serve';\nexport const start = () => serveFunction(${JSON.stringify(name)}, fn.handler${hasWarmUp(name) ? ', fn.warmUp' : ''});\n`,
        resolveDir: root,
        sourcefile: `functions/${name}/entry.ts`,
        loader: 'ts',
      },
      outfile: path.join(outdir, 'function.js'),
    }),
  ];
  if (name === 'convert') {
    entries.push(esbuild.build({ ...shared, entryPoints: [path.join(root, 'lib/media/worker.ts')], outfile: path.join(outdir, 'transcode-worker.js') }));
  }
  return Promise.all(entries).then((results) => {
    fs.copyFileSync(path.join(root, 'scripts/bundle-loader.cjs'), path.join(outdir, 'index.js'));
    writeThirdPartyLicenses(outdir, results.map((r) => r.metafile));
    return name;
  });
};

/**
 * THIRD-PARTY-LICENSES.txt beside a bundle: each npm package it carries, with its licence text. The
 * bundle drops their comments (legalComments: 'none'), and their licences ask for the notice to travel
 * with every copy, so it ships in the image (docs/core.md).
 */
function writeThirdPartyLicenses(outdir, metafiles) {
  const dirs = new Set();
  for (const meta of metafiles) {
    for (const input of Object.keys(meta.inputs)) {
      const pkg = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
      if (pkg) dirs.add(pkg[1]);
    }
  }
  const sections = [...dirs].sort().map((dir) => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, dir, 'package.json'), 'utf8'));
    const file = fs.readdirSync(path.join(root, dir)).find((f) => /^(licen[cs]e|copying)/i.test(f));
    const text = file ? fs.readFileSync(path.join(root, dir, file), 'utf8').trim() : `No licence file in the package; its package.json says ${pkg.license}.`;
    return `${pkg.name}@${pkg.version} (${pkg.license ?? 'see below'})\n\n${text}\n`;
  });
  fs.writeFileSync(path.join(outdir, 'THIRD-PARTY-LICENSES.txt'), sections.join(`\n${'-'.repeat(72)}\n\n`));
}

/** Runs the bundle's module code once and saves V8's code cache beside it (scripts/bundle-loader.cjs). */
function makeCodeCache(name) {
  const made = spawnSync(process.execPath, ['index.js', '--make-code-cache'], { cwd: path.join(root, 'dist', name), encoding: 'utf8', env: { PATH: process.env.PATH, LOG_LEVEL: 'warn' } });
  if (made.status !== 0) throw new Error(`dist/${name}: making the code cache failed: ${made.stderr}`);
}

try {
  // Clear the old output before any build starts writing the new one.
  fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
  const [built] = await Promise.all([Promise.all(names.map(build)), bundleWeb(path.join(root, 'dist/web'))]);
  // Deployed, the download function serves the page too (lib/http/serve.ts).
  if (built.includes('download')) fs.cpSync(path.join(root, 'dist/web'), path.join(root, 'dist/download/web'), { recursive: true });
  if (built.includes('convert')) {
    // The wasm core is loaded from disk at run time (lib/media/core.ts), so it ships beside the bundle,
    // with its licences and build record (docs/core.md).
    fs.cpSync(path.join(root, 'vendor/ffmpeg-core'), path.join(root, 'dist/convert/ffmpeg-core'), { recursive: true });
  }
  for (const name of built) makeCodeCache(name);
  console.log('bundle                       size   code cache');
  for (const name of built) {
    const file = path.join(root, 'dist', name, 'function.js');
    const kib = (f) => `${(fs.statSync(f).size / 1024).toFixed(0).padStart(5)} KiB`;
    console.log(`${`dist/${name}/function.js`.padEnd(28)} ${kib(file)}  ${kib(`${file}.cache`)}`);
  }
  console.log(`dist/web/app.js  ${(fs.statSync(path.join(root, 'dist/web/app.js')).size / 1024).toFixed(0)} KiB`);
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
}
