import path from 'node:path';

// Control characters (CR/LF among them) and bidi controls (U+202A–E, U+2066–9, U+200E/F) never
// reach a stored name, a header or an ID3 title: a name cannot add a header line or read backwards.
const unsafe = /[\p{Cc}\u200E\u200F\u202A-\u202E\u2066-\u2069]/gu;

/** Cuts to at most `max` UTF-16 units without splitting a character (an emoji stays whole). */
export function cutText(text: string, max: number): string {
  if (text.length <= max) return text;
  let out = '';
  for (const ch of text) {
    if (out.length + ch.length > max) break;
    out += ch;
  }
  return out;
}

/** A filename safe to store and show: no path, no control or bidi characters, at most 255 characters. */
export function cleanFilename(raw: string | undefined): string {
  const base = path.basename((raw ?? '').replace(/\\/g, '/'));
  return cutText(base.replace(unsafe, '').trim(), 255).trim() || 'video';
}

/** A file name without its extension (`holiday.mp4` → `holiday`). */
export const withoutExtension = (filename: string) => filename.replace(/\.[^./]{1,10}$/, '');

/** The original name with its extension turned into .mp3 (for Content-Disposition), cleaned again for rows stored before names were. */
export const mp3Filename = (filename: string) => `${withoutExtension(filename.replace(unsafe, '')) || 'audio'}.mp3`;

/** The ID3 title when the user gave none: the file's name without its extension. */
export const defaultTitle = (filename: string) => {
  const name = filename.replace(unsafe, '');
  return withoutExtension(name) || name || 'audio';
};
