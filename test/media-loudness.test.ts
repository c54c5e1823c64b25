// Loudness normalisation through the converter, judged by native ffmpeg's BS.1770 measurement of the
// MP3 (CI installs ffmpeg): integrated loudness within ±1 LU of the target and true peak at most 0.5 dB
// over the ceiling, on speech-like, music-like and quiet clips generated here.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTranscoder } from '../lib/media/transcode';
import type { Mp3Options } from '../lib/media/options';

const transcoder = createTranscoder({ maxDurationSeconds: 600, maxOutputBytes: 50 * 1024 * 1024, parallelism: 2 });
let dir: string;

const ff = (...args: string[]) => execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', ...args]);
// Syllables of band-limited noise, with pauses; a loud synthetic song (chord and kick); the speech
// 18 dB down, as a recording made far from the microphone.
const clips = {
  speech: (file: string) => ff('-f', 'lavfi', '-i', "aevalsrc='(random(0)*2-1)*0.7*pow(max(0,sin(2*PI*3*t)),2)*gt(sin(2*PI*0.3*t),-0.3)':s=44100:d=20", '-af', 'lowpass=3000,highpass=100', '-ac', '1', '-c:a', 'aac', '-b:a', '64k', file),
  music: (file: string) => ff('-f', 'lavfi', '-i', "aevalsrc='0.2*sin(2*PI*220*t)+0.15*sin(2*PI*277.2*t)+0.15*sin(2*PI*329.6*t)+0.45*sin(2*PI*55*t)*exp(-8*mod(t,0.5))|0.2*sin(2*PI*220*t)+0.15*sin(2*PI*277.2*t)+0.15*sin(2*PI*440*t)+0.45*sin(2*PI*55*t)*exp(-8*mod(t,0.5))':s=44100:d=20", '-c:a', 'aac', '-b:a', '96k', file),
  quiet: (file: string) => ff('-f', 'lavfi', '-i', "aevalsrc='(random(0)*2-1)*0.7*pow(max(0,sin(2*PI*3*t)),2)*gt(sin(2*PI*0.3*t),-0.3)':s=48000:d=20", '-af', 'lowpass=3000,highpass=100,volume=-18dB', '-ac', '2', '-c:a', 'aac', '-b:a', '64k', file),
};

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'media-loudness-'));
  for (const [name, make] of Object.entries(clips)) make(path.join(dir, `${name}.m4a`));
});
afterAll(async () => {
  await transcoder.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Native ffmpeg's ebur128 summary of a file: integrated loudness (LUFS) and true peak (dBTP). */
function measure(file: string): { lufs: number; truePeak: number } {
  const log = spawnSync('ffmpeg', ['-hide_banner', '-nostats', '-i', file, '-af', 'ebur128=peak=true', '-f', 'null', '-'], { encoding: 'utf8' }).stderr;
  return { lufs: Number(/^\s+I:\s+(-?[\d.]+) LUFS/m.exec(log)![1]), truePeak: Number(/^\s+Peak:\s+(-?[\d.]+) dBFS/m.exec(log)![1]) };
}

function decode(file: string): Float32Array {
  const raw = execFileSync('ffmpeg', ['-v', 'error', '-i', file, '-ac', '1', '-f', 'f32le', '-'], { maxBuffer: 64 * 1024 * 1024 });
  return new Float32Array(new Uint8Array(raw).buffer);
}

/** The shift (samples, within ±maxLag) at which `b` best matches `a` over a window in the middle. */
function bestLag(a: Float32Array, b: Float32Array, maxLag: number): number {
  const from = Math.floor(a.length / 2);
  const length = 8192;
  let best = 0;
  let bestScore = -Infinity;
  for (let lag = -maxLag; lag <= maxLag; lag++) {
    let dot = 0;
    let energy = 0;
    for (let i = from; i < from + length; i++) {
      dot += a[i] * b[i + lag];
      energy += b[i + lag] ** 2;
    }
    const score = dot / Math.sqrt(energy + 1e-12);
    if (score > bestScore) [best, bestScore] = [lag, score];
  }
  return best;
}

let outputs = 0;
async function convert(clip: keyof typeof clips, options: Mp3Options) {
  const output = path.join(dir, `${clip}-${++outputs}.mp3`);
  const result = await transcoder.transcode(path.join(dir, `${clip}.m4a`), output, options);
  return { result, output };
}

describe('loudness normalisation', () => {
  it.each<[keyof typeof clips, NonNullable<Mp3Options['loudness']>, number, number]>([
    ['speech', 'podcast', -16, -1.5],
    ['speech', 'broadcast', -23, -1],
    ['music', 'podcast', -16, -1.5],
    ['music', 'broadcast', -23, -1],
    ['music', -10, -10, -1.5],
    ['quiet', 'podcast', -16, -1.5],
    ['quiet', 'broadcast', -23, -1],
    ['quiet', -28, -28, -1.5],
  ])('when %s is converted with loudness %s, then native ffmpeg measures %d ± 1 LUFS and a true peak at most 0.5 dB over %d dBTP', async (clip, loudness, target, ceiling) => {
    const { result, output } = await convert(clip, { loudness });
    const { lufs, truePeak } = measure(output);
    expect(Math.abs(lufs - target)).toBeLessThanOrEqual(1);
    expect(truePeak).toBeLessThanOrEqual(ceiling + 0.5);
    // What the job reports: the source's own measurement (as native ffmpeg measures it) and the gain.
    const source = measure(path.join(dir, `${clip}.m4a`));
    expect(result.loudness).toMatchObject({ targetLufs: target, truePeakLimitDb: ceiling });
    expect(Math.abs(result.loudness!.measuredLufs - source.lufs)).toBeLessThanOrEqual(0.5);
    expect(Math.abs(result.loudness!.gainDb - (target - source.lufs))).toBeLessThanOrEqual(result.loudness!.limited ? 6 : 0.5);
  });

  it('when the limiter works (speech brought up to -16 LUFS), then the MP3 keeps every sample where it was: same length, no shift', async () => {
    const plain = await convert('speech', {});
    const loud = await convert('speech', { loudness: 'podcast' });
    expect(loud.result.loudness?.limited).toBe(true);
    expect(loud.result.durationSeconds).toBe(plain.result.durationSeconds);
    const a = decode(plain.output);
    const b = decode(loud.output);
    expect(b.length).toBe(a.length);
    expect(bestLag(a, b, 400)).toBe(0);
  });

  it('when no loudness is asked for, then nothing is measured and the MP3 is as loud as the source', async () => {
    const { result, output } = await convert('quiet', {});
    expect(result.loudness).toBeUndefined();
    expect(Math.abs(measure(output).lufs - measure(path.join(dir, 'quiet.m4a')).lufs)).toBeLessThanOrEqual(0.5);
  });
});
