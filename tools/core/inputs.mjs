// What the core is built from, hashed: the build script and this folder's component list. Shared by
// write-build-info.mjs (at build time) and test/core.test.ts (in CI).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
export const BUILD_INPUTS = ['scripts/build-core.sh', 'tools/core/components.txt'];

/** sha256 over the inputs' paths and contents. */
export function hashBuildInputs() {
  const hash = createHash('sha256');
  for (const file of BUILD_INPUTS) hash.update(`${file}\0`).update(fs.readFileSync(path.join(root, file))).update('\0');
  return hash.digest('hex');
}
