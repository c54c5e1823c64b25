// MP3s tagged by native ffmpeg, as a podcast feed reads them: one with a title, a JPEG front cover
// (APIC) and chapters (CHAP/CTOC), one bare.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { completeConversion, createJob, newJobId } from '../../lib/pipeline/jobs';
import { claimJob } from '../../lib/pipeline/scheduling';
import { getBlobs, newBlobId } from '../../lib/storage/blobs';
import { getDb } from '../../lib/storage/db';

export const taggedChapters = [
  { title: 'Intro — début', start: 0, end: 1.5 },
  { title: 'Main part', start: 1.5, end: 3 },
];

export function makeTaggedMp3s(dir: string): { tagged: Buffer; bare: Buffer; cover: Buffer } {
  const meta = path.join(dir, 'meta.txt');
  fs.writeFileSync(meta, [';FFMETADATA1', 'title=Lecture one', ...taggedChapters.flatMap((c) => ['[CHAPTER]', 'TIMEBASE=1/1000', `START=${c.start * 1000}`, `END=${c.end * 1000}`, `title=${c.title}`])].join('\n'));
  const cover = path.join(dir, 'cover.jpg');
  const ff = (...args: string[]) => execFileSync('ffmpeg', ['-v', 'error', '-y', ...args]);
  ff('-f', 'lavfi', '-i', 'color=c=red:s=64x64:d=1', '-frames:v', '1', cover);
  ff('-f', 'lavfi', '-i', 'sine=f=440:d=3', '-i', cover, '-i', meta, '-map', '0:a', '-map', '1:v', '-map_metadata', '2', '-map_chapters', '2',
    '-c:a', 'libmp3lame', '-b:a', '64k', '-c:v', 'copy', '-id3v2_version', '3', '-metadata:s:v', 'comment=Cover (front)', path.join(dir, 'tagged.mp3'));
  ff('-f', 'lavfi', '-i', 'sine=f=220:d=2', '-c:a', 'libmp3lame', '-b:a', '64k', path.join(dir, 'bare.mp3'));
  return { tagged: fs.readFileSync(path.join(dir, 'tagged.mp3')), bare: fs.readFileSync(path.join(dir, 'bare.mp3')), cover: fs.readFileSync(cover) };
}

/** A done job holding `mp3`, stored through the storage API as the converter stores one; its id. */
export async function storeDoneJob(owner: { id: string; email: string }, mp3: Buffer, filename: string, createdAt = Date.now()): Promise<string> {
  const db = await getDb();
  const id = newJobId();
  await createJob(db, { id, ownerId: owner.id, ownerEmail: owner.email, filename, contentType: 'video/mp4', options: {}, videoBlobId: newBlobId(), videoBytes: 1, videoSha256: '' });
  // Its turn has come and a converter claims it, as convert does (lib/pipeline/scheduling.ts).
  await db('jobs').where({ id }).update({ created_at: createdAt, released_at: createdAt });
  if (!(await claimJob(db, id, 60_000))) throw new Error('the job could not be claimed');
  const blob = await (await getBlobs()).put('mp3s', mp3, { owner: owner.id, filename: 'x.mp3', contentType: 'audio/mpeg' });
  if (!(await completeConversion(db, id, { blobId: blob.id, bytes: blob.size, durationSeconds: 3.01, conversionMs: 10 }))) throw new Error('the job was not converting');
  return id;
}
