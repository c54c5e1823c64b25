import { z } from 'zod';
import { BadInputError } from '../core/errors';

export const sampleRates = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000] as const;

const num = z.coerce.number();

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
  })
  .strict()
  .refine((o) => o.bitrate === undefined || o.quality === undefined, { message: 'give either bitrate (CBR) or quality (VBR), not both', path: ['bitrate'] })
  .refine((o) => o.start === undefined || o.end === undefined || o.end > o.start, { message: 'must be greater than start', path: ['end'] });

export type Mp3Options = z.infer<typeof mp3OptionsSchema>;

const optionNames = ['bitrate', 'quality', 'sampleRate', 'channels', 'start', 'end', 'title'];

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
