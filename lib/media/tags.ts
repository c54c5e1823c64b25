// What the input says about itself, for the MP3's ID3v2 tag (lib/media/id3.ts): its title, artist,
// album and date, and its chapters, read from ffmpeg's FFMETADATA dump of the input (written during
// the probe). Chapters are moved onto the MP3's timeline: shifted by the trim start, cut to the span,
// those outside it dropped.
import fs from 'node:fs';
import type { Chapter, Id3Tag } from './id3';

export interface InputMetadata {
  /** Global tags, keys lower-cased. */
  tags: Record<string, string>;
  /** Chapters in seconds of the input's timeline. */
  chapters: { start: number; end: number; title?: string }[];
}

/** More of an input's tags than this is not read (a tag that large is not a title or a chapter list). */
const MAX_METADATA_BYTES = 1024 * 1024;
/** A CTOC frame counts its entries in one byte. */
const MAX_CHAPTERS = 255;
const MAX_TEXT = 500;

/** Reads the FFMETADATA file ffmpeg wrote (none: no tags, no chapters). */
export function readFfmetadata(file: string): InputMetadata {
  return parseFfmetadata(readHead(file, MAX_METADATA_BYTES));
}

/** The first `max` bytes of a file as UTF-8 ('' when there is no file). */
function readHead(file: string, max: number): string {
  if (!fs.existsSync(file)) return '';
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(Math.min(max, fs.fstatSync(fd).size));
    return buf.toString('utf8', 0, fs.readSync(fd, buf, 0, buf.length, 0));
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads an FFMETADATA1 text (ffmpeg's `-f ffmetadata`): `key=value` lines, `[CHAPTER]` sections. */
export function parseFfmetadata(text: string): InputMetadata {
  const meta: InputMetadata = { tags: {}, chapters: [] };
  let section: 'global' | 'chapter' | 'other' = 'global';
  let chapter: Record<string, string> = {};
  const endChapter = () => {
    if (section !== 'chapter') return;
    const [num, den] = (chapter.timebase ?? '1/1000').split('/').map(Number);
    const start = Number(chapter.start);
    const end = Number(chapter.end);
    if (num > 0 && den > 0 && Number.isFinite(start) && Number.isFinite(end)) {
      meta.chapters.push({ start: (start * num) / den, end: (end * num) / den, ...(chapter.title ? { title: chapter.title } : {}) });
    }
  };
  // A backslash escapes the next character, a newline included (the value goes on on the next line).
  const lines: string[] = [];
  let current = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length) current += c + text[++i];
    else if (c === '\n') {
      lines.push(current);
      current = '';
    } else current += c;
  }
  lines.push(current);
  for (const line of lines) {
    if (line === '' || line.startsWith(';') || line.startsWith('#')) continue;
    if (line.startsWith('[')) {
      endChapter();
      section = line === '[CHAPTER]' ? 'chapter' : 'other';
      chapter = {};
      continue;
    }
    const eq = unescapedEquals(line);
    if (eq < 0) continue;
    const key = unescape(line.slice(0, eq)).toLowerCase();
    const value = unescape(line.slice(eq + 1));
    if (section === 'global') meta.tags[key] = value;
    else if (section === 'chapter') chapter[key] = value;
  }
  endChapter();
  return meta;
}

function unescapedEquals(line: string): number {
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '\\') i++;
    else if (line[i] === '=') return i;
  }
  return -1;
}

const unescape = (s: string): string => s.replace(/\\(.)/gs, '$1');

/** Tag text as shown to a listener: no control or bidi characters, bounded length. */
function clean(value: string | undefined): string | undefined {
  const text = value?.replace(/[\u200E\u200F\u202A-\u202E\u2066-\u2069]/g, '').replace(/\p{Cc}+/gu, ' ').trim().slice(0, MAX_TEXT);
  return text || undefined;
}

/**
 * The ID3 fields from the input's metadata for the span [startSeconds, startSeconds + spanSeconds) of
 * an input whose timeline begins at `inputStartSeconds`. `title` (the user's) wins over the input's.
 */
export function tagsForSpan(meta: InputMetadata, span: { title?: string; startSeconds: number; spanSeconds?: number; inputStartSeconds?: number }): Omit<Id3Tag, 'coverJpeg'> {
  const offset = (span.inputStartSeconds ?? 0) + span.startSeconds;
  const limit = span.spanSeconds ?? Infinity;
  const chapters: Chapter[] = [];
  for (const c of [...meta.chapters].sort((a, b) => a.start - b.start)) {
    const start = Math.max(0, c.start - offset);
    const end = Math.min(limit, c.end - offset);
    if (end - start < 0.001) continue; // outside the span
    chapters.push({ startMs: start * 1000, endMs: end * 1000, title: clean(c.title) ?? `Chapter ${chapters.length + 1}` });
    if (chapters.length === MAX_CHAPTERS) break;
  }
  return {
    title: span.title ?? clean(meta.tags.title),
    artist: clean(meta.tags.artist ?? meta.tags.album_artist),
    album: clean(meta.tags.album),
    date: clean(meta.tags.date ?? meta.tags.year),
    chapters,
  };
}
