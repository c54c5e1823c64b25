// dist/<function>/index.js: starts the function's bundle (function.js, beside this file) from V8's code
// cache (function.js.cache) when there is one this node accepts. Compiling a bundle of a few MiB, and
// the functions its module code runs, is about a third of a cold start; the cache skips both. Without a
// cache, or with one another node version made (V8 rejects it), the bundle compiles as it would under
// require(), so the cache can only make a start faster.
//
// `node index.js --make-code-cache` runs the bundle's module code (not the server) and writes the cache:
// build.mjs does that after bundling, and the Dockerfile again inside the image with the node that will
// run it. Written by hand in plain CommonJS because it runs before anything is loaded.
'use strict';
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

const file = path.join(__dirname, 'function.js');
const cacheFile = `${file}.cache`;
const makeCache = process.argv.includes('--make-code-cache');

/** Runs the bundle as the CommonJS module it is, compiled with `cachedData` when given. */
function load(cachedData) {
  const script = new vm.Script(Module.wrap(fs.readFileSync(file, 'utf8')), {
    filename: file,
    cachedData,
    // The bundle's import() calls (drivers' optional helpers) resolve as they would in a required file.
    importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const mod = new Module(file, module);
  mod.filename = file;
  mod.paths = Module._nodeModulePaths(__dirname);
  Module._cache[file] = mod;
  script.runInThisContext().call(mod.exports, mod.exports, Module.createRequire(file), mod, file, __dirname);
  mod.loaded = true;
  return { script, exports: mod.exports };
}

if (makeCache) {
  // After the module code ran, the cache holds the functions it compiled too, not just the top level.
  const { script } = load(undefined);
  fs.writeFileSync(cacheFile, script.createCachedData());
  process.exit(0);
}

let cachedData;
try {
  cachedData = vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER ? fs.readFileSync(cacheFile) : undefined;
} catch {
  cachedData = undefined; // no cache: compile as usual
}
// A node without the main-context loader for vm scripts (before 20.12) requires the bundle plainly.
let bundle;
if (cachedData) {
  // Under --enable-source-maps node maps the frames of required files, not those of code compiled with
  // vm.Script, as this is: the logger maps the bundle's frames of the errors it logs (lib/core/log.ts).
  const loaded = load(cachedData);
  // A cache from another node, or made under other V8 flags (NODE_OPTIONS), is ignored by V8: the start
  // is as slow as without one, which the operator should hear of.
  if (loaded.script.cachedDataRejected) {
    process.stderr.write(`${JSON.stringify({ level: 'warn', time: new Date().toISOString(), service: 'video2mp3', msg: 'code cache rejected (made by another node version or under other flags): run `node index.js --make-code-cache` with this node and NODE_OPTIONS' })}\n`);
  }
  bundle = loaded.exports;
} else {
  bundle = require(file);
}
bundle.start();
