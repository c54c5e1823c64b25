// Chapters and tags through the converter: the input's chapters (Matroska, MP4) become ID3v2 CHAP
// frames under one CTOC with UTF-8 titles, within one MP3 frame of the input's times, shifted and cut
// for a trimmed span, kept by parallel encoding; its title, artist, album and date become ID3 text
// frames unless the user gives the title. Inputs are made here with native ffmpeg; the tag is read
// with music-metadata.
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
/** One MP3 frame at 44.1 kHz. */
const FRAME_SECONDS = 1152 / 44100;

const CHAPTERS = [
  { start: 0, end: 4.2, title: 'Intro ☕ — “quotes”' },
  { start: 4.2, end: 12.5, title: 'Ünïcode = fine; # not a comment' },
  { start: 12.5, end: 40, title: '第三章' },
];

function metadataFile(): string {
  const escape = (v: string) => v.replace(/[=;#\\\n]/g, (c) => `\\${c}`);
  const lines = [';FFMETADATA1', 'title=A talk', `artist=${escape('Ada = Lovelace')}`, 'album=Lectures 2024', 'date=2024-05-01'];
  for (const c of CHAPTERS) lines.push('[CHAPTER]', 'TIMEBASE=1/1000', `START=${c.start * 1000}`, `END=${c.end * 1000}`, `title=${escape(c.title)}`);
  fs.writeFileSync(file('meta.txt'), `${lines.join('\n')}\n`);
  return file('meta.txt');
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'media-chapters-'));
  const meta = metadataFile();
  const av = ['-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=5:duration=40', '-f', 'lavfi', '-i', 'sine=frequency=440:beep_factor=4:sample_rate=44100:duration=40'];
  const x264 = ['-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p'];
  ff('-f', 'lavfi', '-i', 'color=c=0x3060c0:size=300x300', '-frames:v', '1', file('art.png'));
  ff(...av, '-i', meta, '-map', '0:v', '-map', '1:a', '-map_metadata', '2', '-map_chapters', '2', ...x264, '-c:a', 'aac',
    '-attach', file('art.png'), '-metadata:s:t', 'mimetype=image/png', file('talk.mkv'));
  ff(...av, '-i', meta, '-map', '0:v', '-map', '1:a', '-map_metadata', '2', '-map_chapters', '2', ...x264, '-c:a', 'aac', file('talk.mp4'));
  ff(...av.slice(4), '-c:a', 'aac', file('plain.m4a'));
});
afterAll(async () => {
  await transcoder.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

let outputs = 0;
async function convert(input: string, options: Mp3Options = {}, defaultTitle?: string) {
  const output = file(`out-${++outputs}.mp3`);
  const result = await transcoder.transcode(file(input), output, options, { defaultTitle });
  const meta = await parseFile(output);
  const native = meta.native['ID3v2.4'] ?? [];
  const chaps = native.filter((t) => t.id === 'CHAP').map((t) => t.value as { label: string; info: { startTime: number; endTime: number }; frames: Map<string, unknown> });
  const toc = native.find((t) => t.id === 'CTOC')?.value as { flags: { topLevel: boolean; ordered: boolean }; childElementIds: string[] } | undefined;
  return { result, meta, chaps, toc, chapters: chaps.map((c) => ({ start: c.info.startTime / 1000, end: c.info.endTime / 1000, title: c.frames.get('TIT2') })) };
}

function expectChapters(got: { start: number; end: number; title: unknown }[], want: { start: number; end: number; title: string }[]): void {
  expect(got.map((c) => c.title)).toEqual(want.map((c) => c.title));
  got.forEach((c, i) => {
    expect(Math.abs(c.start - want[i].start)).toBeLessThanOrEqual(FRAME_SECONDS);
    expect(Math.abs(c.end - want[i].end)).toBeLessThanOrEqual(FRAME_SECONDS);
  });
}

describe('chapters and tags', () => {
  it.each(['talk.mkv', 'talk.mp4'])('when %s with three chapters is converted, then the ID3v2.4 tag lists them (CTOC) as CHAP frames with their UTF-8 titles and times', async (input) => {
    const { result, chaps, toc, chapters, meta } = await convert(input);
    expect(result.chapters).toBe(3);
    expect(meta.format.tagTypes).toContain('ID3v2.4');
    expectChapters(chapters, CHAPTERS);
    expect(toc).toMatchObject({ flags: { topLevel: true, ordered: true }, childElementIds: chaps.map((c) => c.label) });
    expect(meta.common).toMatchObject({ title: 'A talk', artist: 'Ada = Lovelace', album: 'Lectures 2024' });
    expect(meta.native['ID3v2.4']!.find((t) => t.id === 'TDRC')?.value).toBe('2024-05-01');
    expect(result.tags).toEqual({ title: 'A talk', artist: 'Ada = Lovelace', album: 'Lectures 2024', date: '2024-05-01' });
  });

  it('when a span from 5 to 30 s is converted, then the chapters inside it are kept, shifted by 5 s and cut at its ends', async () => {
    const { result, chapters } = await convert('talk.mkv', { start: 5, end: 30 });
    expect(result.chapters).toBe(2);
    expectChapters(chapters, [{ start: 0, end: 7.5, title: CHAPTERS[1].title }, { start: 7.5, end: 25, title: CHAPTERS[2].title }]);
  });

  it('when the 40 s video is encoded by two instances in parallel, then the joined MP3 carries the cover, every chapter and the tags', async () => {
    const { result, chapters, meta } = await convert('talk.mkv', { loudness: 'podcast' });
    expect(result.segments).toBe(2);
    expectChapters(chapters, CHAPTERS);
    expect(result.cover).toBe(true);
    expect(meta.common.picture?.[0]).toMatchObject({ format: 'image/jpeg', type: 'Cover (front)' });
    expect(meta.common.artist).toBe('Ada = Lovelace');
    expect(Math.abs(meta.format.duration! - result.durationSeconds)).toBeLessThanOrEqual(0.1);
    expect(Math.abs(result.durationSeconds - 40)).toBeLessThan(0.1);
  });

  it("when the user gives a title, then it replaces the input's title and the artist, album and date are still carried", async () => {
    const { meta, result } = await convert('talk.mkv', { title: 'My title', cover: 'none' });
    expect(meta.common.title).toBe('My title');
    expect(meta.common.artist).toBe('Ada = Lovelace');
    expect(result.chapters).toBe(3);
  });

  it("when the input has no tags or chapters, then the caller's default title is the only tag, and there is no CTOC", async () => {
    const { meta, result, toc } = await convert('plain.m4a', {}, 'plain');
    expect(result.chapters).toBe(0);
    expect(toc).toBeUndefined();
    expect(meta.common.title).toBe('plain');
    expect(Object.values(meta.native).flat().map((t) => t.id)).toEqual(['TIT2']);
  });
});
