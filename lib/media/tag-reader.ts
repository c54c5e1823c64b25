import { parseBuffer } from 'music-metadata';

/** What a podcast feed shows of an MP3, read from its ID3v2 tag. */
export interface Mp3Tag {
  title?: string;
  /** The front cover (or else the first picture). */
  cover?: { mime: string; data: Uint8Array };
  chapters: { title: string; startSeconds: number; endSeconds?: number }[];
}

/** Bytes of the tag header: "ID3", version, flags, and a 28-bit syncsafe size. */
export const id3HeaderBytes = 10;

/**
 * The length of the ID3v2 tag that opens an MP3, from its first 10 bytes (header and footer
 * included); 0 when the file does not start with one.
 */
export function id3TagLength(head: Uint8Array): number {
  if (head.length < id3HeaderBytes || head[0] !== 0x49 || head[1] !== 0x44 || head[2] !== 0x33) return 0;
  const size = head.subarray(6, 10);
  if (size.some((b) => b & 0x80)) return 0; // not syncsafe: not a tag
  const body = (size[0]! << 21) | (size[1]! << 14) | (size[2]! << 7) | size[3]!;
  const footer = head[5]! & 0x10 ? 10 : 0;
  return id3HeaderBytes + body + footer;
}

/**
 * Reads the title, cover and chapters (CHAP/CTOC) from the bytes of an ID3v2 tag, the tag alone:
 * the audio after it is not needed. A tag that cannot be parsed gives nothing rather than an error:
 * the MP3 itself is still fine.
 */
export async function readMp3Tag(tag: Uint8Array): Promise<Mp3Tag> {
  if (id3TagLength(tag) === 0) return { chapters: [] };
  try {
    const { common, format } = await parseBuffer(tag, { mimeType: 'audio/mpeg', size: tag.length }, { duration: false, skipPostHeaders: true });
    const picture = common.picture?.find((p) => /front/i.test(p.type ?? '')) ?? common.picture?.[0];
    return {
      ...(common.title ? { title: common.title } : {}),
      ...(picture ? { cover: { mime: picture.format.includes('/') ? picture.format : `image/${picture.format}`, data: picture.data } } : {}),
      chapters: (format.chapters ?? []).map((c) => ({
        title: c.title,
        startSeconds: c.start / (c.timeScale ?? 1),
        ...(typeof c.end === 'number' ? { endSeconds: c.end / (c.timeScale ?? 1) } : {}),
      })),
    };
  } catch {
    return { chapters: [] };
  }
}
