// Videos of a chosen size, made with native ffmpeg for tests that need more bytes than a fixture has:
// raw frames in Matroska are large and quick to make, and the audio is a plain tone of known length.
import { spawnSync } from 'node:child_process';

/** Writes a `seconds`-long raw-video Matroska at `size` (WxH, 25 fps) with a 440 Hz tone to `file`. */
export function makeRawVideo(file: string, seconds: number, size = '640x360'): void {
  const made = spawnSync('ffmpeg', [
    '-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc=size=${size}:rate=25`, '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=44100',
    '-t', String(seconds), '-c:v', 'rawvideo', '-pix_fmt', 'yuv420p', '-c:a', 'pcm_s16le', file,
  ], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`ffmpeg could not make ${file}: ${made.stderr}`);
}
