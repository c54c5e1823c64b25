import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseBuffer, type IAudioMetadata } from 'music-metadata';
import { afterAll, describe, expect, it } from 'vitest';
import { createTranscoder, TranscodeError, type Transcoder, type TranscodeResult } from '../lib/media/transcode';
import type { Mp3Options } from '../lib/media/options';
import { fixturePath, fixtures, getFixture, readFixture, type FixtureName } from './fixtures';

// One transcoder for the file: the core compiles once and every test reuses it, as production does.
const progress: { percent: number; timeSeconds: number }[] = [];
const transcoder = createTranscoder({
  maxDurationSeconds: 600,
  maxOutputBytes: 10 * 1024 * 1024,
  onProgress: (p) => progress.push(p),
});
const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'transcode-test-'));
afterAll(async () => {
  await transcoder.close();
  fs.rmSync(outDir, { recursive: true, force: true });
});

let outputs = 0;
/** Converts a fixture (or any file) from disk to a new MP3 file. */
function transcodeFile(t: Transcoder, input: FixtureName | { file: string }, options: Mp3Options, call?: { timeoutMs?: number }) {
  const output = path.join(outDir, `${++outputs}.mp3`);
  return t.transcode(typeof input === 'string' ? fixturePath(input) : input.file, output, options, call).then((result) => ({ result, output }));
}

async function convert(name: FixtureName, options = {}): Promise<{ result: TranscodeResult; meta: IAudioMetadata; mp3: Buffer }> {
  const { result, output } = await transcodeFile(transcoder, name, options);
  const mp3 = fs.readFileSync(output);
  const meta = await parseBuffer(mp3, { mimeType: 'audio/mpeg' });
  return { result, meta, mp3 };
}

async function failureOf(promise: Promise<unknown>): Promise<TranscodeError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(TranscodeError);
  return error as TranscodeError;
}

describe('transcode', () => {
  describe.each(fixtures.filter((f) => f.expect === 'ok'))('when the $name fixture ($description) is converted', (fixture) => {
    it('then the MP3 lasts as long as the source audio and has the expected channels', async () => {
      const { result, meta, mp3 } = await convert(fixture.name);
      expect(meta.format.container).toBe('MPEG');
      expect(meta.format.codec).toMatch(/^MPEG [12](\.5)? Layer 3$/);
      expect(Math.abs(meta.format.duration! - fixture.durationSeconds)).toBeLessThanOrEqual(0.1);
      expect(Math.abs(result.durationSeconds - fixture.durationSeconds)).toBeLessThanOrEqual(0.1);
      expect(meta.format.numberOfChannels).toBe(fixture.audioChannels);
      expect(result.bytes).toBe(mp3.byteLength);
    });
  });

  describe.each(fixtures.filter((f) => f.expect !== 'ok'))('when the $name fixture ($description) is converted', (fixture) => {
    it(`then it fails with reason ${fixture.expect} and a message a person understands`, async () => {
      const error = await failureOf(transcodeFile(transcoder, fixture.name, {}));
      expect(error.reason).toBe(fixture.expect);
      expect(error.message).toMatch(/^The .{20,}\.$/);
      expect(error.message).not.toMatch(/ffmpeg|moov|demux|wasm/i);
    });
  });

  it('when the video has no audio, then the message says so plainly', async () => {
    const error = await failureOf(transcodeFile(transcoder, 'no-audio', {}));
    expect(error.message).toBe('The video has no audio track, so there is nothing to convert to MP3.');
  });

  it('when a span is given, then the MP3 lasts as long as the span', async () => {
    const { result, meta } = await convert('mp4', { start: 0.5, end: 2 });
    expect(Math.abs(meta.format.duration! - 1.5)).toBeLessThanOrEqual(0.1);
    expect(Math.abs(result.durationSeconds - 1.5)).toBeLessThanOrEqual(0.1);
  });

  it('when only an end is given, then the MP3 stops there', async () => {
    const { meta } = await convert('webm', { end: 1 });
    expect(Math.abs(meta.format.duration! - 1)).toBeLessThanOrEqual(0.1);
  });

  it('when a bitrate of 128 is asked for, then the MP3 is 128 kbps CBR', async () => {
    const { meta } = await convert('mp4', { bitrate: 128 });
    expect(meta.format.codecProfile).toBe('CBR');
    expect(meta.format.bitrate).toBe(128_000);
  });

  it('when no bitrate is given, then the MP3 is VBR and the quality option changes its size', async () => {
    const best = await convert('mp4', { quality: 0 });
    const usual = await convert('mp4');
    const worst = await convert('mp4', { quality: 9 });
    // ffmpeg writes a Xing (VBR) header but leaves its quality field at 0, so the size tells the quality.
    expect(usual.meta.format.codecProfile).toMatch(/^V/);
    expect(best.result.bytes).toBeGreaterThan(usual.result.bytes);
    expect(usual.result.bytes).toBeGreaterThan(worst.result.bytes);
  });

  it('when a sample rate of 22050 is asked for, then the MP3 is 22050 Hz', async () => {
    const { meta } = await convert('mkv', { sampleRate: 22050 });
    expect(meta.format.sampleRate).toBe(22050);
  });

  it('when one channel is asked for, then the MP3 is mono', async () => {
    const { meta } = await convert('mp4', { channels: 1 });
    expect(meta.format.numberOfChannels).toBe(1);
  });

  it('when the source is 5.1, then the MP3 is stereo', async () => {
    const { meta } = await convert('surround-5.1');
    expect(meta.format.numberOfChannels).toBe(2);
  });

  it('when the source has several audio tracks, then the default one (stereo, not the first mono) is used', async () => {
    const { meta } = await convert('multi-audio');
    expect(meta.format.numberOfChannels).toBe(2);
  });

  it('when a title is given and no cover, then it is the only ID3 tag carried into the MP3', async () => {
    const { meta } = await convert('mp4', { title: 'Ünïcode & "quotes" = fine', cover: 'none' });
    expect(meta.common.title).toBe('Ünïcode & "quotes" = fine');
    const tags = Object.values(meta.native).flat().map((t) => t.id);
    expect(tags).toEqual(['TIT2']);
  });

  it('when the conversion runs, then progress ends at 100 percent', async () => {
    progress.length = 0;
    await convert('mp4');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)?.percent).toBe(100);
  });

  it('when a conversion has failed, then the next one still works', async () => {
    await failureOf(transcodeFile(transcoder, 'truncated', {}));
    await failureOf(transcodeFile(transcoder, 'empty', {}));
    const { meta } = await convert('flv');
    expect(Math.abs(meta.format.duration! - getFixture('flv').durationSeconds)).toBeLessThanOrEqual(0.1);
  });

  it('when several calls are made at once, then each gets its own MP3', async () => {
    const names: FixtureName[] = ['mov', 'mp4', 'mkv'];
    const results = await Promise.all(names.map((name) => transcodeFile(transcoder, name, {})));
    results.forEach(({ result }, i) => {
      expect(Math.abs(result.durationSeconds - getFixture(names[i]).durationSeconds)).toBeLessThanOrEqual(0.1);
    });
  });

  it('when a long conversion is running and another arrives, then the second runs beside it on one instance instead of waiting', async () => {
    const long = { file: path.join(__dirname, 'fixtures/long-5min.mp4') };
    const [first, second] = await Promise.all([transcodeFile(transcoder, long, {}), transcodeFile(transcoder, long, {})]);
    expect(first.result.segments).toBe(2); // alone when it started: split over both instances
    expect(second.result.segments).toBe(1);
    expect(Math.abs(second.result.durationSeconds - first.result.durationSeconds)).toBeLessThanOrEqual(0.05);
  });

  it("when a conversion is done, then the caller's input file is still intact", async () => {
    const before = readFixture('mp4');
    await transcodeFile(transcoder, 'mp4', {});
    expect(readFixture('mp4').equals(before)).toBe(true);
  });

  it('when a conversion fails, then no output file and no temporary file is left', async () => {
    const output = path.join(outDir, 'failed.mp3');
    await failureOf(transcoder.transcode(fixturePath('truncated'), output, {}));
    expect(fs.existsSync(output)).toBe(false);
    expect(fs.readdirSync(transcoder.workDir)).toEqual([]);
  });

  it('when a transcoder is created, then the temporary folders of processes that died are removed, its own is kept', async () => {
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'transcode-recovery-'));
    const dead = path.join(parent, 'video2mp3-convert-999999999');
    fs.mkdirSync(dead);
    fs.writeFileSync(path.join(dead, 'job.video'), 'left by a crash');
    const other = path.join(parent, 'unrelated');
    fs.mkdirSync(other);
    const recovering = createTranscoder({ maxDurationSeconds: 600, maxOutputBytes: 1e6, parallelism: 1, tempDir: parent });
    try {
      expect(fs.existsSync(dead)).toBe(false);
      expect(fs.existsSync(other)).toBe(true);
      expect(path.dirname(recovering.workDir)).toBe(parent);
      expect(path.basename(recovering.workDir)).toMatch(new RegExp(`^video2mp3-convert-${process.pid}-`));
    } finally {
      await recovering.close();
      fs.rmSync(parent, { recursive: true, force: true });
    }
  });

  it('when many conversions run, then the worker memory does not keep growing', async () => {
    const samples: number[] = [];
    for (let i = 0; i < 8; i++) {
      const { result } = await convert('mp4');
      samples.push(result.workerMemory.arrayBuffersBytes + result.workerMemory.heapUsedBytes);
    }
    // Garbage collection makes single samples noisy; the later half must not sit far above the earlier.
    const early = Math.max(...samples.slice(0, 4));
    const late = Math.min(...samples.slice(4));
    expect(late).toBeLessThan(early + 8 * 1024 * 1024);
  });

  it.each([
    [{ bitrate: 1000 }, /bitrate/],
    [{ bitrate: 128, quality: 2 }, /either/],
    [{ quality: 12 }, /quality/],
    [{ sampleRate: 44000 }, /sampleRate/],
    [{ start: 2, end: 1 }, /end/],
  ])('when the options are %o, then the call is refused with a RangeError', async (options, message) => {
    await expect(transcodeFile(transcoder, 'mp4', options)).rejects.toThrow(RangeError);
    await expect(transcodeFile(transcoder, 'mp4', options)).rejects.toThrow(message);
  });

  it('when the trim starts past the end of the media, then the call is refused with a RangeError', async () => {
    await expect(transcodeFile(transcoder, 'mp4', { start: 10 })).rejects.toThrow(RangeError);
  });

  describe('with tight limits', () => {
    const limited = createTranscoder({ maxDurationSeconds: 2.5, maxOutputBytes: 4000 });
    afterAll(() => limited.close());

    it('when the source is longer than the limit, then it fails with too-long', async () => {
      const error = await failureOf(transcodeFile(limited, 'mp4', {}));
      expect(error.reason).toBe('too-long');
      expect(error.message).toBe('The video is 3 s long; only videos up to 2.5 s can be converted.');
    });

    it('when the MP3 would be larger than the limit, then it fails with output-too-large', async () => {
      const error = await failureOf(transcodeFile(limited, 'mov', { bitrate: 320 }));
      expect(error.reason).toBe('output-too-large');
      expect(error.message).toMatch(/^The MP3 would be larger than the 4 kB limit/);
    });
  });

  describe('with a time limit', () => {
    it('when a conversion outlasts the limit, then it is stopped with a plain Error, and the same transcoder converts the next file on a fresh thread', async () => {
      const long = { file: path.join(__dirname, 'fixtures/long-5min.mp4') };
      const error = await transcodeFile(transcoder, long, {}, { timeoutMs: 200 }).then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(Error);
      expect(error).not.toBeInstanceOf(TranscodeError);
      expect((error as Error).message).toMatch(/did not finish within 0 s and was stopped/);
      const after = await transcodeFile(transcoder, 'mp4', {});
      expect(after.result.bytes).toBeGreaterThan(0);
    });
  });
});
