// Bundles the web page into `outdir`: web/app.ts (with tus-js-client's browser build) as app.js,
// beside index.html, style.css and config.js. Used by build.mjs, `npm start` and the browser test.
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);

export async function bundleWeb(outdir) {
  fs.mkdirSync(outdir, { recursive: true });
  await esbuild.build({
    entryPoints: [path.join(here, 'app.ts')],
    outfile: path.join(outdir, 'app.js'),
    bundle: true,
    platform: 'browser',
    format: 'iife',
    target: ['es2022'],
    minify: true,
    sourcemap: 'linked',
    legalComments: 'none',
    logLevel: 'warning',
  });
  for (const name of ['index.html', 'style.css', 'config.js']) fs.copyFileSync(path.join(here, name), path.join(outdir, name));
  return path.join(outdir, 'app.js');
}
