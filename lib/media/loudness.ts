// Loudness normalisation as one static gain for the whole span: the span is measured first (BS.1770
// integrated loudness and true peak, as ffmpeg's ebur128 filter measures them), then every encoding of
// it, single or segment, applies the same gain, and a lookahead limiter where the gain would push the
// peaks over the ceiling. Both are fed the same samples from the trim start in every segment
// (lib/media/convert-file.ts), so a segment's limiter is in the same state at a seam as one instance's,
// and the join stays exact.
import type { EncodeRun, EncodeTask, HostFileSpec } from './encoder-pool';
import { loudnessTarget, type Mp3Options } from './options';

export interface LoudnessMeasure {
  integratedLufs: number;
  truePeakDb: number;
}

/** What was measured and what the MP3 got. */
export interface LoudnessPlan {
  targetLufs: number;
  truePeakLimitDb: number;
  measuredLufs: number;
  measuredTruePeakDb: number;
  gainDb: number;
  /** Whether the limiter runs (the gain would push the true peak over the ceiling). */
  limited: boolean;
}

/** Gating's floor: ebur128 reports this for a span that is silence (nothing above the absolute gate). */
const SILENT_LUFS = -70;
/**
 * The limiter holds sample peaks this far under the true-peak ceiling: inter-sample peaks and the
 * MP3 encoding itself add up to about this much on limited material.
 */
const LIMITER_MARGIN_DB = 1;
/** The limiter's lookahead (ms), which is also the delay alimiter adds to its output. */
const ATTACK_MS = 5;
const RELEASE_MS = 50;

/** The filter that measures a span (after resampling and downmixing to the output's channels). */
const MEASURE_FILTER = 'ebur128=peak=true:metadata=1';
/** Log lines of the measurement: ebur128's summary. */
const MEASURE_LINES = String.raw`^\s+(I|Peak):\s`;

/** Reads ebur128's summary; undefined when it did not print one (no audio reached it). */
export function parseMeasure(lines: string[]): LoudnessMeasure | undefined {
  let integratedLufs: number | undefined;
  let truePeakDb: number | undefined;
  for (const line of lines) {
    const i = /^\s+I:\s+(-?[\d.]+|-inf) LUFS/.exec(line);
    if (i) integratedLufs = i[1] === '-inf' ? -Infinity : Number(i[1]);
    const peak = /^\s+Peak:\s+(-?[\d.]+|-inf) dBFS/.exec(line);
    if (peak) truePeakDb = peak[1] === '-inf' ? -Infinity : Number(peak[1]);
  }
  return integratedLufs === undefined || truePeakDb === undefined ? undefined : { integratedLufs, truePeakDb };
}

/**
 * Measures a span with one run: `input` (the decoder's arguments), then `filters` (resampling,
 * downmix, any shaping whose `delay` is cut from the front), the span's end, and ebur128. Undefined
 * when the input could not be read through (a line matching `failureLines`, or no summary).
 */
export async function measureLoudness(
  run: (task: Omit<EncodeTask, 'timeoutMs'>) => Promise<EncodeRun>,
  m: { input: string[]; files: HostFileSpec[]; filters: string[]; delay: number; endSample?: number; capSeconds?: number; failureLines: string; onProgress(t: number): void },
): Promise<LoudnessMeasure | undefined> {
  const trim = [m.delay > 0 ? `start_sample=${m.delay}` : '', m.endSample === undefined ? '' : `end_sample=${m.endSample + m.delay}`].filter(Boolean).join(':');
  const result = await run({
    args: [...m.input, '-af', [...m.filters, ...(trim ? [`atrim=${trim}`] : []), MEASURE_FILTER].join(','), ...(m.capSeconds === undefined ? [] : ['-t', String(m.capSeconds)]), '-f', 'null', '-'],
    files: m.files,
    keep: `${MEASURE_LINES}|${m.failureLines}`,
    logLevel: 32, // AV_LOG_INFO: the summary's level
    onProgress: m.onProgress,
  });
  const failed = new RegExp(m.failureLines);
  return result.lines.some((line) => failed.test(line)) ? undefined : parseMeasure(result.lines);
}

/** One gain to the target, and whether a limiter must hold the peaks under the ceiling. */
export function planLoudness(option: NonNullable<Mp3Options['loudness']>, measured: LoudnessMeasure): LoudnessPlan {
  const { targetLufs, truePeakDb } = loudnessTarget(option);
  // Silence stays silence: there is no loudness to bring to the target.
  const gainDb = measured.integratedLufs <= SILENT_LUFS ? 0 : round2(targetLufs - measured.integratedLufs);
  const limited = measured.truePeakDb + gainDb > truePeakDb - LIMITER_MARGIN_DB;
  return { targetLufs, truePeakLimitDb: truePeakDb, measuredLufs: measured.integratedLufs, measuredTruePeakDb: measured.truePeakDb, gainDb, limited };
}

/**
 * The plan after measuring its result: where the limiter took loudness away, the gain makes up for
 * it (once: the limiter then takes a little more, well within a loudness unit on speech and music).
 */
export function correctLoudness(plan: LoudnessPlan, result: LoudnessMeasure): LoudnessPlan {
  if (result.integratedLufs <= SILENT_LUFS) return plan;
  return { ...plan, gainDb: round2(plan.gainDb + plan.targetLufs - result.integratedLufs) };
}

/** Samples by which alimiter delays its output at this rate (its lookahead buffer, less one). */
export function limiterDelay(sampleRate: number, channels: number): number {
  // As alimiter sizes its buffer: rate × attack (s) × channels, truncated, whole frames.
  let buffer = Math.trunc(sampleRate * (ATTACK_MS / 1000) * channels);
  buffer -= buffer % channels;
  return buffer / channels - 1;
}

/**
 * Filters that apply the plan, after resampling and downmixing; `delay` samples must then be cut from
 * the front (the limiter's lookahead) and `delay` samples of silence are added at the end to flush it.
 */
export function loudnessFilters(plan: LoudnessPlan, sampleRate: number, channels: number): { filters: string[]; delay: number } {
  const filters = [`volume=${plan.gainDb}dB`];
  if (!plan.limited) return { filters, delay: 0 };
  const delay = limiterDelay(sampleRate, channels);
  const limit = 10 ** ((plan.truePeakLimitDb - LIMITER_MARGIN_DB) / 20);
  filters.push(`apad=pad_len=${delay}`, `alimiter=limit=${limit.toFixed(5)}:attack=${ATTACK_MS}:release=${RELEASE_MS}:level=0`);
  return { filters, delay };
}

function round2(v: number): number {
  return Math.round(v * 100) / 100;
}
