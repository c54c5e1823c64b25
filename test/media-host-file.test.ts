import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadCore, type Core, type CoreFs, type CoreInstance } from '../lib/media/ffmpeg-core';
import { attachHostFile } from '../lib/media/host-file';
import { scanMp3 } from '../lib/media/mp3-join';
import { fixturePath } from './fixtures';

let core: Core;
let instance: CoreInstance;
let wasmFs: CoreFs & { stat(p: string): { size: number } };
let dir: string;

beforeAll(async () => {
  core = await loadCore();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'host-file-'));
});
beforeEach(() => {
  instance = core.instantiate(() => {});
  wasmFs = instance.fs as typeof wasmFs;
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('host files in the ffmpeg core', () => {
  it('when a fixture is converted from a host file to a host-file MP3, then the MP3 on disk is complete and its Xing header was written back', () => {
    const output = path.join(dir, 'out.mp3');
    fs.writeFileSync(output, Buffer.alloc(100_000, 7)); // stale bytes: the write must truncate them
    const input = attachHostFile(wasmFs, '/in.mp4', fixturePath('mp4-moov-at-end'), 'read');
    const out = attachHostFile(wasmFs, '/out.mp3', output, 'write');
    try {
      expect(instance.run(['-nostdin', '-y', '-i', '/in.mp4', '-vn', '-c:a', 'libmp3lame', '-q:a', '2', '-f', 'mp3', '/out.mp3'])).toBe(0);
    } finally {
      input.close();
      out.close();
    }
    const layout = scanMp3(output);
    const frames = layout.frameOffsets.length - 1;
    expect(layout.frameOffsets.at(-1)).toBe(fs.statSync(output).size); // nothing stale after the last frame
    const bytes = fs.readFileSync(output);
    const tagFrames = bytes.readUInt32BE(layout.tag!.offset + layout.tag!.xingOffset + 8);
    expect(tagFrames).toBe(frames);
    const probed = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', output]).toString();
    expect(Math.abs(Number(probed) - 3)).toBeLessThanOrEqual(0.1);
  });

  it('when the input is read, then the wasm file system holds none of its bytes and the node is gone after close', () => {
    const hostFile = fixturePath('mp4');
    const file = attachHostFile(wasmFs, '/sized.mp4', hostFile, 'read');
    try {
      const stat = wasmFs.stat('/sized.mp4');
      expect(stat.size).toBe(fs.statSync(hostFile).size);
      const head = wasmFs.readFile('/sized.mp4');
      expect(Buffer.from(head).equals(fs.readFileSync(hostFile))).toBe(true);
    } finally {
      file.close();
    }
    expect(() => wasmFs.stat('/sized.mp4')).toThrow();
  });

  it('when the host file does not exist, then attaching fails and leaves no node behind', () => {
    expect(() => attachHostFile(wasmFs, '/missing.mp4', path.join(dir, 'missing.mp4'), 'read')).toThrow(/ENOENT/);
    expect(() => wasmFs.stat('/missing.mp4')).toThrow();
  });
});
