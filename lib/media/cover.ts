// Cover art for the MP3's ID3v2 tag (APIC, front cover): the input's own picture (an MP4 `covr`, a
// Matroska attachment, an audio file's art: ffmpeg shows each as an attached picture stream), or else
// one frame of the video, as a JPEG of at most MAX_SIDE × MAX_SIDE and MAX_BYTES.
//
// A picture that already fits is copied as it is; any other is decoded once and scaled. The frame of a
// video is taken from key frames only (no other frame is decoded), the most typical of a few in a row
// (ffmpeg's thumbnail filter), which passes over a single black key frame at a fade or a cut. The
// decoders keep the converter's guard on picture size (lib/media/convert-file.ts), and a picture the
// probe says is larger is not tried at all.
import fs from 'node:fs';
import type { EncodeRun, EncodeTask } from './encoder-pool';
import { EncoderTimeoutError } from './encoder-pool';
import { coverChoice, type Mp3Options } from './options';
import type { ProbedStream } from './probe';

export const MAX_SIDE = 600;
export const MAX_BYTES = 200 * 1024;
/** Larger pictures are refused by the decoders anyway (the converter's -max_pixels). */
const MAX_PIXELS = 4096 * 4096;
/** Key frames the thumbnail filter chooses among. */
const KEY_FRAMES = 3;
/** JPEG quantiser scales tried in turn until the picture fits in MAX_BYTES. */
const QUALITIES = [3, 8, 16, 31];

const IN = '/input';
const OUT = '/cover.jpg';

export interface CoverRequest {
  input: string;
  /** Where the JPEG is written (only when there is a cover). */
  output: string;
  option: Mp3Options['cover'];
  streams: ProbedStream[];
  /** The span converted: the automatic frame is taken 10 % into it. */
  startSeconds: number;
  spanSeconds?: number;
  /** Input options every run gets (the decoders' limits). */
  inputArgs: string[];
  run(task: Omit<EncodeTask, 'timeoutMs'>): Promise<EncodeRun>;
}

/** Where the cover comes from, or undefined when the input has none to give (or none is wanted). */
export function chooseCoverSource(req: Pick<CoverRequest, 'option' | 'streams' | 'startSeconds' | 'spanSeconds'>): { stream: ProbedStream; atSeconds?: number; exact?: boolean } | undefined {
  const choice = coverChoice(req.option);
  if (choice.kind === 'none') return undefined;
  const fits = (s: ProbedStream) => s.width === undefined || s.height === undefined || s.width * s.height <= MAX_PIXELS;
  const video = req.streams.find((s) => s.type === 'video' && !s.isAttachedPicture);
  if (choice.kind === 'frame') return video && fits(video) ? { stream: video, atSeconds: choice.seconds, exact: true } : undefined;
  const picture = req.streams.find((s) => s.type === 'video' && s.isAttachedPicture && fits(s));
  if (picture) return { stream: picture };
  if (!video || !fits(video)) return undefined;
  return { stream: video, atSeconds: req.startSeconds + 0.1 * (req.spanSeconds ?? 0) };
}

/**
 * Writes the cover of `req.input` as a JPEG to `req.output`; false when there is none. A picture that
 * cannot be decoded means no cover, not a failed conversion; only a timeout is passed on.
 */
export async function extractCover(req: CoverRequest): Promise<boolean> {
  const source = chooseCoverSource(req);
  if (!source) return false;
  const { stream } = source;
  const files = [{ wasmPath: IN, hostPath: req.input, mode: 'read' as const }, { wasmPath: OUT, hostPath: req.output, mode: 'write' as const }];
  const attempt = async (args: string[]): Promise<'ok' | 'too-large' | 'failed'> => {
    fs.rmSync(req.output, { force: true });
    try {
      await req.run({ args, files, keep: '^$', logLevel: 32 });
    } catch (error) {
      if (error instanceof EncoderTimeoutError) throw error;
      return 'failed';
    }
    const size = fs.existsSync(req.output) ? fs.statSync(req.output).size : 0;
    return size === 0 ? 'failed' : size > MAX_BYTES ? 'too-large' : 'ok';
  };
  // One encoder thread too: the JPEG encoder would start pthread workers that stay with the instance.
  const picture = ['-map', `0:${stream.index}`, '-an', '-sn', '-dn', '-frames:v', '1', '-threads', '1', '-f', 'image2', '-update', '1', OUT];
  const small = stream.width !== undefined && stream.height !== undefined && stream.width <= MAX_SIDE && stream.height <= MAX_SIDE;
  if (source.atSeconds === undefined && stream.codec === 'mjpeg' && small && (await attempt([...req.inputArgs, '-i', IN, '-c:v', 'copy', ...picture])) === 'ok') return true;

  // The chosen frame: decoded up to that time. The automatic frame: the key frame at or before it and
  // the next ones, nothing in between decoded. Original timestamps, so the frame at 0 is not "before" the seek.
  const automatic = source.atSeconds !== undefined && !source.exact;
  const seek = source.atSeconds === undefined ? [] : ['-ss', String(source.atSeconds), ...(automatic ? ['-noaccurate_seek'] : []), '-copyts'];
  const keyFrames = automatic ? ['-skip_frame', 'nokey'] : [];
  const filters = [
    // Only ever smaller, keeping the aspect ratio; scaled before the thumbnail filter holds its frames.
    `scale=w='min(${MAX_SIDE},iw)':h='min(${MAX_SIDE},ih)':force_original_aspect_ratio=decrease`,
    ...(automatic ? [`thumbnail=n=${KEY_FRAMES}`] : []),
    'format=yuvj420p', // full-range YUV, as JPEG has it
  ];
  for (const q of QUALITIES) {
    const outcome = await attempt([...seek, ...req.inputArgs, ...keyFrames, '-i', IN, '-vf', filters.join(','), '-c:v', 'mjpeg', '-q:v', String(q), ...picture]);
    if (outcome === 'ok') return true;
    if (outcome === 'failed') break;
  }
  fs.rmSync(req.output, { force: true });
  return false;
}
