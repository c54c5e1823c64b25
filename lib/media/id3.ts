// The MP3's ID3v2.4 tag, written here rather than by ffmpeg's muxer: ffmpeg takes a cover or chapters
// only from further inputs, and with more than one input this build reads each on its own thread (a
// pthread worker that stays in the instance and that the log filter cannot serve, lib/media/log-filter.ts).
// Encodings write no tag; the tag is put in front of the frames when the MP3 is assembled
// (lib/media/convert-file.ts, lib/media/mp3-join.ts). Version 2.4 for its UTF-8 text.
import fs from 'node:fs';

export interface Chapter {
  /** Milliseconds from the MP3's first sample. */
  startMs: number;
  endMs: number;
  title?: string;
}

export interface Id3Tag {
  title?: string;
  artist?: string;
  album?: string;
  /** As the input gave it (ID3v2.4 TDRC takes an ISO 8601 prefix: yyyy, yyyy-MM-dd …). */
  date?: string;
  /** Path of a JPEG: the front cover. */
  coverJpeg?: string;
  chapters?: Chapter[];
}

const UTF8 = 3;

const syncsafe = (n: number): Buffer => Buffer.from([(n >> 21) & 0x7f, (n >> 14) & 0x7f, (n >> 7) & 0x7f, n & 0x7f]);

function frame(id: string, body: Buffer): Buffer {
  const header = Buffer.alloc(10);
  header.write(id, 0, 'latin1');
  syncsafe(body.length).copy(header, 4);
  return Buffer.concat([header, body]);
}

const textFrame = (id: string, text: string): Buffer => frame(id, Buffer.concat([Buffer.from([UTF8]), Buffer.from(text, 'utf8')]));

const latin1z = (text: string): Buffer => Buffer.from(`${text}\0`, 'latin1');

/** The tag's bytes, or an empty buffer when there is nothing to say. */
export function buildId3Tag(tag: Id3Tag): Buffer {
  const frames: Buffer[] = [];
  if (tag.title) frames.push(textFrame('TIT2', tag.title));
  if (tag.artist) frames.push(textFrame('TPE1', tag.artist));
  if (tag.album) frames.push(textFrame('TALB', tag.album));
  if (tag.date) frames.push(textFrame('TDRC', tag.date));
  if (tag.coverJpeg) {
    // Encoding, MIME type, picture type 3 (front cover), empty description, the JPEG.
    frames.push(frame('APIC', Buffer.concat([Buffer.from([UTF8]), latin1z('image/jpeg'), Buffer.from([3, 0]), fs.readFileSync(tag.coverJpeg)])));
  }
  const chapters = tag.chapters ?? [];
  if (chapters.length > 0) {
    const ids = chapters.map((_, i) => `ch${i}`);
    // CTOC: top-level and ordered, listing every chapter.
    frames.push(frame('CTOC', Buffer.concat([latin1z('toc'), Buffer.from([0x03, chapters.length]), ...ids.map(latin1z)])));
    chapters.forEach((c, i) => {
      const times = Buffer.alloc(16);
      times.writeUInt32BE(Math.max(0, Math.round(c.startMs)), 0);
      times.writeUInt32BE(Math.max(0, Math.round(c.endMs)), 4);
      times.writeUInt32BE(0xffffffff, 8); // byte offsets unused: times only
      times.writeUInt32BE(0xffffffff, 12);
      frames.push(frame('CHAP', Buffer.concat([latin1z(ids[i]), times, ...(c.title ? [textFrame('TIT2', c.title)] : [])])));
    });
  }
  if (frames.length === 0) return Buffer.alloc(0);
  const body = Buffer.concat(frames);
  const header = Buffer.from([0x49, 0x44, 0x33, 4, 0, 0, ...syncsafe(body.length)]);
  return Buffer.concat([header, body]);
}

/** Writes `id3` and then the whole of `mp3` (which has no tag) to `output`, a chunk at a time. */
export function prependTag(id3: Buffer, mp3: string, output: string): void {
  const out = fs.openSync(output, 'w');
  const from = fs.openSync(mp3, 'r');
  try {
    fs.writeSync(out, id3);
    const buf = Buffer.alloc(1 << 20);
    for (let n; (n = fs.readSync(from, buf, 0, buf.length, null)) > 0; ) fs.writeSync(out, buf, 0, n);
  } finally {
    fs.closeSync(from);
    fs.closeSync(out);
  }
}
