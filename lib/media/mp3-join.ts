// Joins MP3 segments encoded in parallel into one gapless MP3 (docs/media-engine.md, "Parallel segments").
// Every segment is an MPEG-1 Layer III file written by ffmpeg's mp3 muxer (a Xing/Info frame with a LAME
// tag first) from a span of the same source that starts on a frame boundary of the output: segment i's
// frame f carries the same samples as frame f + startFrame of a single-instance encoding. The join keeps
// segment 0's frames up to the seam, then segment i's frames from a seam frame on, where
// - the seam frame is past the segment's warm-up (decoder priming, resampler and LAME's psychoacoustic
//   state), and
// - the bit reservoir carries across: the seam frame's main data may begin up to main_data_begin bytes
//   before it, in frames that are dropped; those bytes are copied into the reservoir bytes at the end of
//   the kept frames of the previous segment, which are free because the previous segment's own next
//   frame (dropped) would have used them. So a seam needs main_data_begin(seam) ≤ main_data_begin of the
//   previous segment's first dropped frame (0 ≤ anything: a frame that starts its data itself always fits);
// and rewrites the first frame's Xing/LAME tag for the whole file (frame and byte counts, TOC, delay and
// padding, music length, music CRC, tag CRC). The decoded sample count is exact: the last segment's
// padding ends the file where a single encoding would.
//
// Layer III of MPEG-1 (32, 44.1, 48 kHz: 1152 samples a frame, 9-bit main_data_begin) and of MPEG-2
// and 2.5 (8 to 24 kHz: 576 samples a frame, 8-bit main_data_begin, shorter side info) are joined:
// every sample rate LAME encodes.
import fs from 'node:fs';

/** Samples in one Layer III frame at this sample rate. */
export function samplesPerFrame(sampleRate: number): number {
  return sampleRate >= 32000 ? 1152 : 576;
}

const RATES: Record<number, number[]> = { 3: [44100, 48000, 32000], 2: [22050, 24000, 16000], 0: [11025, 12000, 8000] };

/** Whether segments at this output sample rate can be joined (any Layer III rate). */
export function canJoin(sampleRate: number): boolean {
  return Object.values(RATES).some((rates) => rates.includes(sampleRate));
}

const BITRATES_V1_L3 = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0];
const BITRATES_V2_L3 = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0];

interface FrameHeader {
  length: number;
  sampleRate: number;
  /** MPEG-2 or 2.5 (low sampling frequencies). */
  lsf: boolean;
  mono: boolean;
  crc: boolean;
}

/** Bytes of a frame's side info. */
const sideInfoLength = (h: { lsf: boolean; mono: boolean }): number => (h.lsf ? (h.mono ? 9 : 17) : h.mono ? 17 : 32);

/** Bytes of a frame before its main data: header, CRC, side info. */
const payloadStart = (h: { lsf: boolean; mono: boolean; crc: boolean }): number => 4 + (h.crc ? 2 : 0) + sideInfoLength(h);

function parseHeader(b: Uint8Array, at: number): FrameHeader | undefined {
  if (b[at] !== 0xff || (b[at + 1] & 0xe6) !== 0xe2) return undefined; // sync, Layer III
  const version = (b[at + 1] >> 3) & 3;
  const sampleRate = RATES[version]?.[(b[at + 2] >> 2) & 3];
  const lsf = version !== 3;
  const bitrate = (lsf ? BITRATES_V2_L3 : BITRATES_V1_L3)[b[at + 2] >> 4] * 1000;
  if (!bitrate || !sampleRate) return undefined;
  const padding = (b[at + 2] >> 1) & 1;
  return {
    length: Math.floor(((lsf ? 72 : 144) * bitrate) / sampleRate) + padding,
    sampleRate,
    lsf,
    mono: b[at + 3] >> 6 === 3,
    crc: (b[at + 1] & 1) === 0,
  };
}

/** Where the frames of one MP3 file are, and what its Xing/LAME tag says. */
export interface Mp3Layout {
  /** Bytes before the first frame (the ID3v2 tag). */
  audioStart: number;
  sampleRate: number;
  lsf: boolean;
  mono: boolean;
  crc: boolean;
  /** The Xing/Info frame (the first frame), or undefined when the file has none. */
  tag?: { offset: number; length: number; xingOffset: number; delay: number; padding: number };
  /** Offsets of the audio frames (the tag frame excluded), then one past the last frame's end. */
  frameOffsets: number[];
  /** main_data_begin of each audio frame. */
  mainDataBegin: number[];
}

const CHUNK = 1 << 20;

/** Reads a file's frame layout with positional reads: memory holds one chunk, not the file. */
export function scanMp3(path: string): Mp3Layout {
  const fd = fs.openSync(path, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(CHUNK + 16);
    let bufStart = 0;
    let bufLen = 0;
    // Makes bytes [at, at + n) available in buf; returns their index in buf.
    const need = (at: number, n: number): number | undefined => {
      if (at + n > size) return undefined;
      if (at < bufStart || at + n > bufStart + bufLen) {
        bufStart = at;
        bufLen = fs.readSync(fd, buf, 0, Math.min(buf.length, size - at), at);
      }
      return at - bufStart;
    };
    let at = 0;
    const id3 = need(0, 10);
    if (id3 !== undefined && buf.toString('latin1', id3, id3 + 3) === 'ID3') {
      const tagSize = ((buf[6] & 0x7f) << 21) | ((buf[7] & 0x7f) << 14) | ((buf[8] & 0x7f) << 7) | (buf[9] & 0x7f);
      at = 10 + tagSize + (buf[5] & 0x10 ? 10 : 0);
    }
    const audioStart = at;
    const first = need(at, 4);
    const firstHeader = first === undefined ? undefined : parseHeader(buf, first);
    if (!firstHeader) throw new Error('Not an MPEG Layer III file: no frame where the audio should start.');
    const { sampleRate, lsf, mono, crc } = firstHeader;
    const layout: Mp3Layout = { audioStart, sampleRate, lsf, mono, crc, frameOffsets: [], mainDataBegin: [] };
    const xingOffset = 4 + sideInfoLength(firstHeader);
    const tagAt = need(at, Math.min(firstHeader.length, size - at));
    if (tagAt !== undefined && /^(Xing|Info)$/.test(buf.toString('latin1', tagAt + xingOffset, tagAt + xingOffset + 4))) {
      const lame = tagAt + xingOffset + 120;
      const packed = (buf[lame + 21] << 16) | (buf[lame + 22] << 8) | buf[lame + 23];
      layout.tag = { offset: at, length: firstHeader.length, xingOffset, delay: packed >> 12, padding: packed & 0xfff };
      at += firstHeader.length;
    }
    for (;;) {
      const i = need(at, 6);
      const header = i === undefined ? undefined : parseHeader(buf, i);
      if (i === undefined || !header || at + header.length > size) break;
      if (header.mono !== mono || header.crc !== crc || header.sampleRate !== sampleRate) break;
      const side = i + 4 + (header.crc ? 2 : 0);
      layout.frameOffsets.push(at);
      layout.mainDataBegin.push(lsf ? buf[side] : (buf[side] << 1) | (buf[side + 1] >> 7));
      at += header.length;
    }
    layout.frameOffsets.push(at);
    return layout;
  } finally {
    fs.closeSync(fd);
  }
}

export interface JoinSegment {
  path: string;
  layout: Mp3Layout;
  /** Index of this segment's first frame in the whole file (its start in samples / samples per frame). */
  startFrame: number;
}

export class SeamError extends Error {
  override readonly name = 'SeamError';
}

export interface SeamRule {
  /** Frames at a segment's start that are never kept (warm-up). */
  warmupFrames: number;
  /** The seam frame is searched for in this many frames after the warm-up. */
  searchFrames: number;
  /** Frames before a segment's end that are never kept (its end flush). */
  tailFrames: number;
}

/**
 * The seam between `prev` and `next`: the first frame of `next` past its warm-up whose reservoir bytes
 * fit in the free reservoir of `prev` at the same point of the whole file. Returns frame indexes in each
 * segment's own numbering: `prev` is kept up to `prevTo` (exclusive), `next` from `nextFrom` on.
 */
export function findSeam(prev: JoinSegment, next: JoinSegment, rule: SeamRule): { prevTo: number; nextFrom: number } {
  const shift = next.startFrame - prev.startFrame;
  const prevFrames = prev.layout.mainDataBegin.length;
  const nextMdb = next.layout.mainDataBegin;
  for (let f = rule.warmupFrames; f < Math.min(nextMdb.length, rule.warmupFrames + rule.searchFrames); f++) {
    const prevTo = f + shift;
    if (prevTo > prevFrames - rule.tailFrames) break;
    if (prevTo > 0 && nextMdb[f] <= prev.layout.mainDataBegin[prevTo]) return { prevTo, nextFrom: f };
  }
  throw new SeamError(`No frame where the bit reservoir can carry across within ${rule.searchFrames} frames after the warm-up.`);
}

/** File pieces (offset, length) holding the `count` main-data bytes just before frame `frame`, in order. */
function reservoirPieces(layout: Mp3Layout, frame: number, count: number, base = 0): [number, number][] {
  const pieces: [number, number][] = [];
  const skip = payloadStart(layout);
  for (let f = frame - 1; count > 0 && f >= 0; f--) {
    const start = layout.frameOffsets[f] + skip;
    const end = layout.frameOffsets[f + 1];
    const n = Math.min(count, end - start);
    if (n > 0) pieces.unshift([base + end - n, n]);
    count -= n;
  }
  if (count > 0) throw new SeamError('The bit reservoir reaches before the first frame.');
  return pieces;
}

// CRC-16/ARC (poly 0x8005 reflected), as ffmpeg's AV_CRC_16_ANSI_LE.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xa001 : c >>> 1;
  return c;
});
function crc16(crc: number, bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; i++) crc = (crc >>> 8) ^ CRC_TABLE[(crc ^ bytes[i]) & 0xff];
  return crc;
}

export interface JoinResult {
  frames: number;
  bytes: number;
  /** Decoded samples: frames × samples per frame − encoder delay − padding. */
  samples: number;
  sampleRate: number;
  /** Index in the whole file of each seam's first frame from the next segment. */
  seamFrames: number[];
}

/**
 * Writes `segments` (in order; segment 0 starts at frame 0) joined into `outPath`, behind `id3` (an
 * ID3v2 tag's bytes) or else segment 0's own tag. Throws SeamError when a seam cannot be made exact;
 * the caller then encodes in one instance.
 */
export function joinMp3Segments(segments: JoinSegment[], outPath: string, rule: SeamRule, id3?: Buffer): JoinResult {
  const head = segments[0];
  const tag = head.layout.tag;
  if (!tag || segments.some((s) => !s.layout.tag || s.layout.sampleRate !== head.layout.sampleRate || s.layout.mono !== head.layout.mono)) {
    throw new SeamError('The segments do not all carry a Xing/LAME tag with the same format.');
  }
  // Frame ranges [from, to) of each segment, in its own numbering.
  const ranges = segments.map(() => ({ from: 0, to: 0 }));
  for (let i = 1; i < segments.length; i++) {
    const { prevTo, nextFrom } = findSeam(segments[i - 1], segments[i], rule);
    if (prevTo <= ranges[i - 1].from) throw new SeamError(`Segment ${i - 1} ends before it starts.`);
    ranges[i - 1].to = prevTo;
    ranges[i].from = nextFrom;
  }
  const last = segments.length - 1;
  ranges[last].to = segments[last].layout.mainDataBegin.length;

  const out = fs.openSync(outPath, 'w+');
  try {
    const headFd = fs.openSync(head.path, 'r');
    const tagFrame = Buffer.alloc(tag.length);
    let written = 0;
    const audioStart = id3 ? id3.length : head.layout.audioStart;
    try {
      // The ID3v2 tag (given, or segment 0's as it is), then a placeholder for the rewritten tag frame.
      if (id3) fs.writeSync(out, id3, 0, id3.length, 0);
      else copyRange(headFd, out, 0, head.layout.audioStart, 0);
      fs.readSync(headFd, tagFrame, 0, tag.length, tag.offset);
    } finally {
      fs.closeSync(headFd);
    }
    written = audioStart + tag.length;
    const outStart: number[] = []; // output offset of each segment's first kept frame
    const frameEnds: number[] = []; // byte offset (from the tag frame) after each kept frame, for the TOC
    for (let i = 0; i < segments.length; i++) {
      const { path, layout } = segments[i];
      const { from, to } = ranges[i];
      const fd = fs.openSync(path, 'r');
      try {
        const start = layout.frameOffsets[from];
        outStart.push(written);
        copyRange(fd, out, start, layout.frameOffsets[to] - start, written);
        for (let f = from; f < to; f++) frameEnds.push(written - audioStart + layout.frameOffsets[f + 1] - start);
        written += layout.frameOffsets[to] - start;
      } finally {
        fs.closeSync(fd);
      }
    }
    // Carry each seam frame's reservoir bytes into the free reservoir of the frames kept before it.
    for (let i = 1; i < segments.length; i++) {
      const next = segments[i];
      const count = next.layout.mainDataBegin[ranges[i].from];
      if (count === 0) continue;
      const prev = segments[i - 1];
      const prevBase = outStart[i - 1] - prev.layout.frameOffsets[ranges[i - 1].from];
      const bytes = readPieces(next.path, reservoirPieces(next.layout, ranges[i].from, count));
      let at = 0;
      for (const [offset, length] of reservoirPieces(prev.layout, ranges[i - 1].to, count, prevBase)) {
        fs.writeSync(out, bytes, at, length, offset);
        at += length;
      }
    }
    const crc = crcOfRange(out, audioStart + tag.length, written);
    const frames = frameEnds.length;
    const bytes = written - audioStart;
    const padding = segments[last].layout.tag!.padding;
    rewriteTag(tagFrame, tag.xingOffset, { frames, bytes, frameEnds, delay: tag.delay, padding, crc });
    fs.writeSync(out, tagFrame, 0, tagFrame.length, audioStart);
    const seamFrames = segments.slice(1).map((seg, i) => seg.startFrame + ranges[i + 1].from);
    const samples = frames * samplesPerFrame(head.layout.sampleRate) - tag.delay - padding;
    return { frames, bytes, samples, sampleRate: head.layout.sampleRate, seamFrames };
  } finally {
    fs.closeSync(out);
  }
}

function copyRange(from: number, to: number, start: number, length: number, at: number): void {
  const buf = Buffer.alloc(Math.min(CHUNK, Math.max(length, 1)));
  for (let done = 0; done < length; ) {
    const n = fs.readSync(from, buf, 0, Math.min(buf.length, length - done), start + done);
    if (n === 0) throw new Error('An MP3 segment ended early while being joined.');
    fs.writeSync(to, buf, 0, n, at + done);
    done += n;
  }
}

function crcOfRange(fd: number, start: number, end: number): number {
  const buf = Buffer.alloc(CHUNK);
  let crc = 0;
  for (let at = start; at < end; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(CHUNK, end - at), at);
    if (n === 0) break;
    crc = crc16(crc, buf.subarray(0, n));
    at += n;
  }
  return crc;
}

function readPieces(path: string, pieces: [number, number][]): Buffer {
  const bytes = Buffer.alloc(pieces.reduce((sum, [, n]) => sum + n, 0));
  const fd = fs.openSync(path, 'r');
  try {
    let at = 0;
    for (const [offset, length] of pieces) {
      fs.readSync(fd, bytes, at, length, offset);
      at += length;
    }
  } finally {
    fs.closeSync(fd);
  }
  return bytes;
}

/**
 * Writes the whole file's figures into a Xing/LAME tag frame, as ffmpeg's mp3 muxer does: frames and
 * bytes (the tag frame included), a 100-entry TOC, delay/padding, music length and CRC, tag CRC.
 */
export function rewriteTag(
  frame: Buffer,
  xingOffset: number,
  f: { frames: number; bytes: number; frameEnds: number[]; delay: number; padding: number; crc: number },
): void {
  const x = xingOffset;
  frame.writeUInt32BE(f.frames, x + 8);
  frame.writeUInt32BE(f.bytes, x + 12);
  // The TOC from the byte count after every 2^k-th frame, sampled as ffmpeg's muxer samples it.
  const BAGS = 400;
  const bag: number[] = [];
  let want = 1;
  let seen = 0;
  for (const end of f.frameEnds) {
    if (++seen !== want) continue;
    bag.push(end);
    if (bag.length === BAGS) {
      for (let i = 1; i < BAGS; i += 2) bag[i >> 1] = bag[i];
      bag.length = BAGS / 2;
      want *= 2;
    }
    seen = 0;
  }
  frame[x + 16] = 0;
  for (let i = 1; i < 100; i++) {
    const j = Math.floor((i * bag.length) / 100);
    frame[x + 16 + i] = Math.min(255, Math.floor((256 * bag[j]) / f.bytes));
  }
  frame.writeUIntBE((Math.min(f.delay, 4095) << 12) | Math.min(f.padding, 4095), x + 141, 3);
  frame.writeUInt32BE(f.bytes, x + 148);
  frame.writeUInt16BE(f.crc, x + 152);
  // As ffmpeg's muxer: the CRC of the frame's first 190 bytes, taken while the tag CRC field is still
  // zero (it falls inside them when the side info is short) and the frame zero-padded to 190 bytes.
  frame.writeUInt16BE(0, x + 154);
  const first190 = Buffer.alloc(190);
  frame.copy(first190, 0, 0, Math.min(190, frame.length));
  frame.writeUInt16BE(crc16(0, first190), x + 154);
}
