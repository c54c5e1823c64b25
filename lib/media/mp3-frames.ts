// MPEG audio frame headers and the Xing/LAME tag: enough to tell an MP3's real duration.
const BITRATES_V1 = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
const BITRATES_V2 = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
const SAMPLE_RATES: Record<number, number[]> = { 3: [44100, 48000, 32000], 2: [22050, 24000, 16000], 0: [11025, 12000, 8000] };

export interface FrameHeader {
  version: number; // 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
  sampleRate: number;
  samplesPerFrame: number;
  length: number;
  mono: boolean;
}

export function readFrameHeader(mp3: Uint8Array, at: number): FrameHeader | undefined {
  if (at + 4 > mp3.length || mp3[at] !== 0xff || (mp3[at + 1] & 0xe0) !== 0xe0) return undefined;
  const version = (mp3[at + 1] >> 3) & 3;
  const layer = (mp3[at + 1] >> 1) & 3;
  const bitrateIndex = mp3[at + 2] >> 4;
  const sampleRate = SAMPLE_RATES[version]?.[(mp3[at + 2] >> 2) & 3];
  if (layer !== 1 || !sampleRate || bitrateIndex === 0 || bitrateIndex === 15) return undefined;
  const bitrate = (version === 3 ? BITRATES_V1 : BITRATES_V2)[bitrateIndex] * 1000;
  const padding = (mp3[at + 2] >> 1) & 1;
  const samplesPerFrame = version === 3 ? 1152 : 576;
  const length = Math.floor(((samplesPerFrame / 8) * bitrate) / sampleRate) + padding;
  return { version, sampleRate, samplesPerFrame, length, mono: (mp3[at + 3] >> 6) === 3 };
}

/**
 * Duration of an MP3 in seconds: from the Xing/Info frame count minus the LAME tag's encoder delay
 * and padding when present (what ffmpeg's muxer writes), else by walking every frame.
 */
export function measureMp3Duration(mp3: Uint8Array): number {
  let at = 0;
  if (mp3.length >= 10 && mp3[0] === 0x49 && mp3[1] === 0x44 && mp3[2] === 0x33) {
    const size = ((mp3[6] & 0x7f) << 21) | ((mp3[7] & 0x7f) << 14) | ((mp3[8] & 0x7f) << 7) | (mp3[9] & 0x7f);
    at = 10 + size + (mp3[5] & 0x10 ? 10 : 0);
  }
  const first = readFrameHeader(mp3, at);
  if (!first) return 0;
  const sideInfo = first.version === 3 ? (first.mono ? 17 : 32) : first.mono ? 9 : 17;
  const tag = at + 4 + sideInfo;
  const tagId = String.fromCharCode(...mp3.subarray(tag, tag + 4));
  if ((tagId === 'Xing' || tagId === 'Info') && mp3[tag + 7] & 1) {
    const view = new DataView(mp3.buffer, mp3.byteOffset, mp3.byteLength);
    const flags = view.getUint32(tag + 4);
    const frames = view.getUint32(tag + 8);
    const lame = tag + 8 + 4 + (flags & 2 ? 4 : 0) + (flags & 4 ? 100 : 0) + (flags & 8 ? 4 : 0);
    let trimmed = 0;
    if (lame + 24 <= mp3.length && /^(LAME|Lavc|Lavf)/.test(String.fromCharCode(...mp3.subarray(lame, lame + 4)))) {
      const packed = (mp3[lame + 21] << 16) | (mp3[lame + 22] << 8) | mp3[lame + 23];
      trimmed = (packed >> 12) + (packed & 0xfff);
    }
    return Math.max(0, frames * first.samplesPerFrame - trimmed) / first.sampleRate;
  }
  let samples = 0;
  for (let frame: FrameHeader | undefined = first; frame; frame = readFrameHeader(mp3, at)) {
    samples += frame.samplesPerFrame;
    at += frame.length;
  }
  return samples / first.sampleRate;
}

