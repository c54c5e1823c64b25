import { z } from 'zod';
import { BadInputError } from '../core/errors';

export const sampleRates = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000] as const;

const num = z.coerce.number();

/** Loudness presets: integrated loudness (LUFS) and true-peak ceiling (dBTP). */
export const loudnessPresets = {
  podcast: { targetLufs: -16, truePeakDb: -1.5 },
  broadcast: { targetLufs: -23, truePeakDb: -1 }, // EBU R128
} as const;

/** A target given as a number gets the podcast preset's ceiling. */
export const DEFAULT_TRUE_PEAK_DB = loudnessPresets.podcast.truePeakDb;

const LOUDNESS_RULE = 'must be podcast, broadcast or a number of LUFS from -31 to -5';
const loudness = z.union([z.enum(['podcast', 'broadcast']), num.min(-31, LOUDNESS_RULE).max(-5, LOUDNESS_RULE)], { error: LOUDNESS_RULE });

/** `frame@<seconds>`: the video frame at that time of the input. */
const FRAME_COVER = /^frame@(\d{1,5}(?:\.\d{1,3})?)$/;
const cover = z.string().refine((v) => v === 'auto' || v === 'none' || FRAME_COVER.test(v), 'must be auto, none or frame@<seconds>');

/** What a user may ask of the MP3, as query parameters or form fields (strings) or JSON. */
export const mp3OptionsSchema = z
  .object({
    bitrate: num.int().min(32).max(320).optional(),
    quality: num.int().min(0).max(9).optional(),
    sampleRate: num.int().refine((v) => (sampleRates as readonly number[]).includes(v), `must be one of ${sampleRates.join(', ')}`).optional(),
    channels: num.int().refine((v) => v === 1 || v === 2, 'must be 1 or 2').transform((v) => v as 1 | 2).optional(),
    start: num.min(0).max(86_400).optional(),
    end: num.gt(0).max(86_400).optional(),
    // Bidi controls (U+202A–E, U+2066–9, U+200E/F) are dropped: an ID3 title cannot make itself read backwards.
    title: z.string().transform((v) => v.replace(/[\u200E\u200F\u202A-\u202E\u2066-\u2069]/g, ''))
      .pipe(z.string().trim().min(1).max(200).refine((v) => !/\p{Cc}/u.test(v), 'must not contain control characters')).optional(),
    /** Loudness normalisation (off when absent). */
    loudness: loudness.optional(),
    /** Cover art: `auto` when absent. */
    cover: cover.optional(),
  })
  .strict()
  .refine((o) => o.bitrate === undefined || o.quality === undefined, { message: 'give either bitrate (CBR) or quality (VBR), not both', path: ['bitrate'] })
  .refine((o) => o.start === undefined || o.end === undefined || o.end > o.start, { message: 'must be greater than start', path: ['end'] });

export type Mp3Options = z.infer<typeof mp3OptionsSchema>;

const optionNames = ['bitrate', 'quality', 'sampleRate', 'channels', 'start', 'end', 'title', 'loudness', 'cover'];

/** Picks the known option fields out of `fields` and validates them; 400 naming the field otherwise. */
export function parseMp3Options(fields: Record<string, unknown>): Mp3Options {
  const picked = Object.fromEntries(
    Object.entries(fields).filter(([k, v]) => optionNames.includes(k) && v !== undefined && v !== ''),
  );
  for (const [k, v] of Object.entries(picked)) {
    if (typeof v !== 'string' && typeof v !== 'number') throw new BadInputError(`${k}: must be given once`);
  }
  const result = mp3OptionsSchema.safeParse(picked);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new BadInputError(`${issue.path.join('.') || 'options'}: ${issue.message}`);
  }
  return result.data;
}

/** The loudness target of `option`: integrated LUFS and the true-peak ceiling. */
export function loudnessTarget(option: NonNullable<Mp3Options['loudness']>): { targetLufs: number; truePeakDb: number } {
  return typeof option === 'number' ? { targetLufs: option, truePeakDb: DEFAULT_TRUE_PEAK_DB } : loudnessPresets[option];
}

/** What the cover option asks for. */
export function coverChoice(option: Mp3Options['cover']): { kind: 'auto' } | { kind: 'none' } | { kind: 'frame'; seconds: number } {
  if (option === undefined || option === 'auto') return { kind: 'auto' };
  if (option === 'none') return { kind: 'none' };
  return { kind: 'frame', seconds: Number(FRAME_COVER.exec(option)![1]) };
}
