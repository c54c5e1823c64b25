// Cover art through the converter: the input's own picture or a frame of its video becomes the MP3's
// ID3v2 front cover (APIC), a JPEG of at most 600 × 600 and 200 KB. Inputs are made here with native
// ffmpeg (CI installs it); the tag is read with music-metadata and the picture measured with ffprobe.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseFile } from 'music-metadata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTranscoder } from '../lib/media/transcode';
import type { Mp3Options } from '../lib/media/options';

const transcoder = createTranscoder({ maxDurationSeconds: 600, maxOutputBytes: 50 * 1024 * 1024, parallelism: 2 });
let dir: string;
const ff = (...args: string[]) => execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', ...args]);
const file = (name: string) => path.join(dir, name);
const X264 = ['-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p'];
const tone = (seconds: number) => ['-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=44100:duration=${seconds}`];

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'media-cover-'));
  ff('-f', 'lavfi', '-i', 'testsrc2=size=400x300', '-frames:v', '1', file('art-400x300.jpg'));
  ff('-f', 'lavfi', '-i', 'color=c=0x3060c0:size=800x800', '-frames:v', '1', file('art-800.png'));
  // Noise compresses badly: at the first quality tried its JPEG is over the size limit.
  ff('-f', 'lavfi', '-i', 'testsrc2=size=1600x1200', '-vf', 'noise=alls=100:allf=u', '-frames:v', '1', file('noisy-1600x1200.png'));
  ff(...tone(3), '-i', file('art-400x300.jpg'), '-map', '0:a', '-map', '1:v', '-c:a', 'aac', '-c:v', 'copy', '-disposition:v:0', 'attached_pic', file('covr.m4a'));
  ff(...tone(3), '-c:a', 'libvorbis', '-attach', file('art-800.png'), '-metadata:s:t', 'mimetype=image/png', file('attachment.mkv'));
  ff(...tone(3), '-i', file('noisy-1600x1200.png'), '-map', '0:a', '-map', '1:v', '-c:a', 'libmp3lame', '-c:v', 'copy', '-disposition:v:0', 'attached_pic', '-id3v2_version', '3', file('art.mp3'));
  ff(...tone(3), '-c:a', 'aac', file('no-picture.m4a'));
  // 20 s of video, key frames every second: black from 1.5 to 2.5 s (where 10 % in falls), red until
  // 5 s, blue after.
  ff('-f', 'lavfi', '-i', 'color=c=red:size=320x240:rate=10:duration=20', ...tone(20),
    '-vf', "drawbox=c=blue:t=fill:enable='gte(t,5)',drawbox=c=black:t=fill:enable='between(t,1.5,2.5)'", ...X264, '-g', '10', '-c:a', 'aac', file('black-at-10pc.mp4'));
  ff('-f', 'lavfi', '-i', 'testsrc2=size=1920x1080:rate=5:duration=4', ...tone(4), ...X264, '-c:a', 'aac', file('1080p.mp4'));
});
afterAll(async () => {
  await transcoder.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

let outputs = 0;
async function coverOf(input: string, options: Mp3Options = {}) {
  const output = file(`out-${++outputs}.mp3`);
  const result = await transcoder.transcode(file(input), output, options);
  const meta = await parseFile(output);
  const picture = meta.common.picture?.[0];
  let size: { width: number; height: number; rgb: number[] } | undefined;
  if (picture) {
    const jpeg = file(`cover-${outputs}.jpg`);
    fs.writeFileSync(jpeg, picture.data);
    const [width, height] = execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=width,height', '-of', 'csv=p=0', jpeg]).toString().trim().split(',').map(Number);
    // The picture's mean colour: scaled to one pixel.
    const rgb = [...execFileSync('ffmpeg', ['-v', 'error', '-i', jpeg, '-vf', 'scale=1:1:flags=area', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'])];
    size = { width, height, rgb };
  }
  return { result, meta, picture, size, pictures: meta.common.picture?.length ?? 0 };
}

describe('cover art', () => {
  it("when an MP4 carries its own cover (covr) that fits, then the MP3's front cover is that JPEG, byte for byte", async () => {
    const { result, picture, pictures } = await coverOf('covr.m4a');
    expect(result.cover).toBe(true);
    expect(pictures).toBe(1);
    expect(picture!.format).toBe('image/jpeg');
    expect(picture!.type).toBe('Cover (front)');
    expect(Buffer.from(picture!.data).equals(fs.readFileSync(file('art-400x300.jpg')))).toBe(true);
  });

  it('when a Matroska file has an 800×800 PNG attachment, then the front cover is a 600×600 JPEG of it', async () => {
    const { result, picture, size } = await coverOf('attachment.mkv');
    expect(result.cover).toBe(true);
    expect(picture!.format).toBe('image/jpeg');
    expect(size).toMatchObject({ width: 600, height: 600 });
    // The attachment's colour (0x3060c0), within JPEG's error.
    size!.rgb.forEach((v, i) => expect(Math.abs(v - [0x30, 0x60, 0xc0][i])).toBeLessThan(12));
  });

  it('when an MP3 carries a noisy 1600×1200 picture, then the cover is scaled to 600×450 and compressed under 200 KB', async () => {
    const { result, picture, size } = await coverOf('art.mp3');
    expect(result.cover).toBe(true);
    expect(size).toMatchObject({ width: 600, height: 450 });
    expect(picture!.data.length).toBeLessThanOrEqual(200 * 1024);
    expect(picture!.data.length).toBeGreaterThan(20 * 1024); // still a picture, not a grey block
  });

  it('when a video has no picture of its own, then the cover is a frame from 10 % in, passing over a black key frame there', async () => {
    const { result, size } = await coverOf('black-at-10pc.mp4');
    expect(result.cover).toBe(true);
    expect(size).toMatchObject({ width: 320, height: 240 });
    expect(Math.max(...size!.rgb)).toBeGreaterThan(150); // red, not black
  });

  it('when frame@7 is asked for, then the cover is the frame at 7 s (blue)', async () => {
    const { size } = await coverOf('black-at-10pc.mp4', { cover: 'frame@7' });
    const [r, g, b] = size!.rgb;
    expect(b).toBeGreaterThan(150);
    expect(r).toBeLessThan(60);
    expect(g).toBeLessThan(60);
  });

  it('when a 1080p video is converted, then its frame is scaled to 600×338 at most', async () => {
    const { size, picture } = await coverOf('1080p.mp4');
    expect(size!.width).toBe(600);
    expect(Math.abs(size!.height - 338)).toBeLessThanOrEqual(1);
    expect(picture!.data.length).toBeLessThanOrEqual(200 * 1024);
  });

  it.each<[string, string, Mp3Options]>([
    ['cover is none', 'covr.m4a', { cover: 'none' }],
    ['the input has neither video nor picture', 'no-picture.m4a', {}],
    ['frame@ is asked of an input without video', 'no-picture.m4a', { cover: 'frame@1' }],
    ['frame@ is past the end of the video', 'black-at-10pc.mp4', { cover: 'frame@60' }],
  ])('when %s, then the MP3 has no picture and the conversion still succeeds', async (_label, input, options) => {
    const { result, pictures, meta } = await coverOf(input, options);
    expect(result.cover).toBe(false);
    expect(pictures).toBe(0);
    expect(meta.format.duration).toBeGreaterThan(2.9);
  });

  it('when the cover and a title are both there, then both are in the one ID3v2.4 tag in front of the audio', async () => {
    const { meta } = await coverOf('covr.m4a', { title: 'Ünïcode cover' });
    expect(meta.format.tagTypes).toEqual(['ID3v2.4']);
    expect(meta.common.title).toBe('Ünïcode cover');
    expect(Object.values(meta.native).flat().map((t) => t.id).sort()).toEqual(['APIC', 'TIT2']);
  });
});
