// What ffmpeg says about an input, read from its log: the streams, the duration, and whether it can
// be converted at all. The exit code cannot tell: a probe (`-i` and no output) always exits with 1.
import type { FailureDetail, TranscodeFailure } from './worker-protocol';

/** An input that can never be converted (within these limits); the caller tells the user why. */
export class JobFailure extends Error {
  constructor(readonly reason: TranscodeFailure, readonly detail: FailureDetail = {}) {
    super(reason);
  }
}

/** Options that contradict the input (a trim start past its end). */
export class InvalidOptions extends Error {}

export interface ProbedStream {
  index: number;
  type: 'audio' | 'video' | 'other';
  channels?: number;
  sampleRate?: number;
  isDefault: boolean;
  isAttachedPicture: boolean;
  /** Codec name of a video stream (e.g. h264, mjpeg, png). */
  codec?: string;
  width?: number;
  height?: number;
}

export interface Probe {
  /** Demuxer that recognised the bytes (e.g. "mov,mp4,m4a,3gp,3g2,mj2"), even if opening then failed. */
  detectedFormat?: string;
  opened: boolean;
  durationSeconds?: number;
  /** Where the input's timeline begins (ffmpeg's start time): -ss and chapter times count from it. */
  startSeconds?: number;
  streams: ProbedStream[];
}

const CHANNEL_LAYOUTS: Record<string, number> = {
  mono: 1, stereo: 2, downmix: 2, quad: 4, hexagonal: 6, octagonal: 8, hexadecagonal: 16,
};

function parseChannels(description: string): number | undefined {
  const layout = /\d+ Hz, ([^,]+)/.exec(description)?.[1]?.trim();
  if (!layout) return undefined;
  const named = CHANNEL_LAYOUTS[layout.replace(/\(.*\)$/, '')];
  if (named) return named;
  const counted = /^(\d+) channels/.exec(layout);
  if (counted) return Number(counted[1]);
  const dotted = /^(\d+)\.(\d+)/.exec(layout); // 5.1, 7.1(wide), 2.1, 22.2 …
  return dotted ? Number(dotted[1]) + Number(dotted[2]) : undefined;
}

export function parseClock(text: string): number {
  const [h, m, s] = text.split(':').map(Number);
  return h * 3600 + m * 60 + s;
}

/** Reads what `ffmpeg -i input` printed about the input. */
export function parseProbe(lines: string[]): Probe {
  const probe: Probe = { opened: false, streams: [] };
  let inInputBlock = false;
  for (const line of lines) {
    // ffmpeg prefixes the line with its context ("[NULL @ 0x…] ").
    const detected = /^(?:\[[^\]]+\] )?Format (.+) probed with size=\d+ and score=\d+/.exec(line);
    if (detected) probe.detectedFormat = detected[1];
    const header = /^Input #0, (.+), from '/.exec(line);
    if (header) {
      inInputBlock = header[1] !== '(null)';
      probe.opened ||= inInputBlock;
      continue;
    }
    if (!inInputBlock) continue;
    if (!line.startsWith(' ')) {
      inInputBlock = false;
      continue;
    }
    const duration = /^\s+Duration: (\d+:\d+:\d+(?:\.\d+)?)/.exec(line);
    if (duration) probe.durationSeconds = parseClock(duration[1]);
    const startTime = /^\s+Duration: .*, start: (-?\d+(?:\.\d+)?)/.exec(line);
    if (startTime) probe.startSeconds = Number(startTime[1]);
    const stream = /^\s+Stream #0:(\d+).*?: (Audio|Video|Subtitle|Data|Attachment): (.*)$/.exec(line);
    if (stream) {
      const [, index, kind, description] = stream;
      const rate = kind === 'Audio' ? /, (\d+) Hz/.exec(description) : null;
      const size = kind === 'Video' ? /, (\d+)x(\d+)/.exec(description) : null;
      probe.streams.push({
        index: Number(index),
        type: kind === 'Audio' ? 'audio' : kind === 'Video' ? 'video' : 'other',
        channels: kind === 'Audio' ? parseChannels(description) : undefined,
        sampleRate: rate ? Number(rate[1]) : undefined,
        isDefault: /\(default\)/.test(description),
        isAttachedPicture: /\(attached pic\)/.test(description),
        ...(kind === 'Video' ? { codec: /^(\w+)/.exec(description)?.[1] } : {}),
        ...(size ? { width: Number(size[1]), height: Number(size[2]) } : {}),
      });
    }
  }
  return probe;
}

/**
 * Classifies an input, or throws the reason it cannot be converted. The rule for bad inputs:
 * - empty input, or bytes a demuxer recognised but could not open (truncated MP4 without its moov
 *   index, broken headers) → 'corrupt': it looks like media, but is damaged.
 * - bytes no demuxer recognises, still images (ffmpeg's image demuxers), or containers with neither
 *   audio nor video (e.g. subtitles) → 'unsupported': it is not a video or audio file at all.
 * - a video without an audio stream → 'no-audio'.
 */
export function chooseAudioStream(probe: Probe, inputBytes: number): ProbedStream {
  if (inputBytes === 0) throw new JobFailure('corrupt', { empty: true });
  if (!probe.opened) throw new JobFailure(probe.detectedFormat ? 'corrupt' : 'unsupported');
  const format = probe.detectedFormat ?? '';
  if (/_pipe$|^image2$/.test(format)) throw new JobFailure('unsupported');
  const audio = probe.streams.filter((s) => s.type === 'audio');
  if (audio.length === 0) {
    const hasVideo = probe.streams.some((s) => s.type === 'video' && !s.isAttachedPicture);
    throw new JobFailure(hasVideo ? 'no-audio' : 'unsupported');
  }
  return audio.find((s) => s.isDefault) ?? audio[0];
}

