// The project's ffmpeg core (vendor/ffmpeg-core/, scripts/build-core.sh, docs/core.md): built from this
// checkout's build inputs, redistributable (no GPL or nonfree part), single-threaded, and carrying every
// component the converter and the MP3 features use (tools/core/components.txt).
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getCoreDir, loadCore, type Core } from '../lib/media/ffmpeg-core';
import { hashBuildInputs } from '../tools/core/inputs.mjs';

const root = path.resolve(__dirname, '..');
let core: Core;

beforeAll(async () => {
  core = await loadCore();
});

/** ffmpeg's stdout for these arguments (its listings), in a fresh instance. */
function listing(...args: string[]): string[] {
  const out: string[] = [];
  core.instantiate(() => {}, (line) => out.push(line)).run(['-hide_banner', ...args]);
  return out;
}

/** Component names of one kind from tools/core/components.txt. */
function listed(kind: string): string[] {
  return fs
    .readFileSync(path.join(root, 'tools/core/components.txt'), 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l.startsWith(`${kind}:`))
    .flatMap((l) => l.slice(kind.length + 1).split(',').map((n) => n.trim()));
}

describe('the ffmpeg core', () => {
  it('when the build inputs are hashed, then they match the ones the checked-in core was built from', () => {
    const info = JSON.parse(fs.readFileSync(path.join(getCoreDir(), 'build.json'), 'utf8')) as { inputs: string; wasmBytes: number };
    expect(info.inputs, 'scripts/build-core.sh or tools/core/components.txt changed: run scripts/build-core.sh').toBe(hashBuildInputs());
    expect(fs.statSync(path.join(getCoreDir(), 'ffmpeg-core.wasm')).size).toBe(info.wasmBytes);
  });

  it('when its configure line is read, then it has no GPL or nonfree part and the licence is the LGPL', () => {
    expect(core.info.configuration).toMatch(/--disable-everything/);
    expect(core.info.configuration).not.toMatch(/--enable-(gpl|nonfree|version3)\b/);
    expect(core.info.license).toBe('LGPL version 2.1 or later');
    for (const file of ['ffmpeg-COPYING.LGPLv2.1', 'lame-COPYING', 'zlib-LICENSE']) expect(fs.statSync(path.join(getCoreDir(), 'licenses', file)).size).toBeGreaterThan(500);
    expect(fs.readFileSync(path.join(getCoreDir(), 'SOURCES.md'), 'utf8')).toContain(core.info.ffmpeg);
  });

  it('when the glue is read, then the core has no threads (its memory is not shared)', () => {
    const glue = fs.readFileSync(path.join(getCoreDir(), 'ffmpeg-core.js'), 'utf8');
    expect(glue).not.toMatch(/SharedArrayBuffer|PThread/);
    const instance = core.instantiate(() => {});
    expect(instance.memoryBytes()).toBe(32 * 1024 * 1024);
  });

  it.each([
    ['decoder', '-decoders'],
    ['encoder', '-encoders'],
    ['filter', '-filters'],
  ])('when its %ss are listed, then every one in the component list is there and no external library but LAME', (kind, flag) => {
    const names = listing(flag)
      .map((l) => /^ [A-Z.]{6} (\S+)|^ [T.][S.][C.] (\S+)/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => m[1] ?? m[2]);
    const wanted = listed(kind);
    for (const name of wanted) expect(names).toContain(name);
    expect(names.filter((n) => n.startsWith('lib') && n !== 'libmp3lame')).toEqual([]);
  });

  it('when its demuxers, muxers and protocols are listed, then every listed one is there', () => {
    const formats = listing('-formats').join('\n');
    // The image pipe demuxers list under their format's name (image_png_pipe is png_pipe).
    for (const name of [...listed('demuxer'), ...listed('muxer')]) expect(formats).toMatch(new RegExp(`\\b${name.replace(/^image_(\w+_pipe)$/, '$1')}\\b`));
    const protocols = listing('-protocols').map((l) => l.trim());
    for (const name of listed('protocol')) expect(protocols).toContain(name);
  });

  it('when a run ends with an error, then its exit code says so and the next instance still works', () => {
    const lines: string[] = [];
    expect(core.instantiate((l) => lines.push(l)).run(['-nostdin', '-i', '/missing.mp4'])).toBe(1);
    expect(lines.join('\n')).toMatch(/\/missing\.mp4: No such file or directory/);
    const instance = core.instantiate(() => {});
    expect(instance.run(['-nostdin', '-f', 'lavfi', '-i', 'sine=d=0.1', '-c:a', 'libmp3lame', '-f', 'mp3', '/out.mp3'])).toBe(0);
    expect(instance.fs.readFile('/out.mp3').length).toBeGreaterThan(500);
  });
});
