// Writes vendor/ffmpeg-core/build.json for scripts/build-core.sh: the key=value pairs it is given,
// the core's size and sha256, and `inputs`, the hash of what the build is made from (inputs.mjs), which
// test/core.test.ts recomputes so a changed script or component list without a rebuild fails.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { hashBuildInputs } from './inputs.mjs';

const [file, ...pairs] = process.argv.slice(2);
const info = Object.fromEntries(pairs.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
const wasm = fs.readFileSync(path.join(path.dirname(file), 'ffmpeg-core.wasm'));
info.wasmBytes = wasm.length;
info.wasmSha256 = createHash('sha256').update(wasm).digest('hex');
info.inputs = hashBuildInputs();
fs.writeFileSync(file, `${JSON.stringify(info, null, 2)}\n`);
