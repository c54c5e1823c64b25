// Where the CLI keeps what it remembers: the service URL and token (mode 0600) and the tus upload
// URLs that let a rerun resume, in the user's config directory.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Session {
  url: string;
  token?: string;
  email?: string;
  /** The podcast feed's URL as last created or rotated: the service keeps only a hash of it. */
  feedUrl?: string;
}

/** $XDG_CONFIG_HOME/video2mp3 (~/.config/video2mp3), %APPDATA%\video2mp3 on Windows. */
export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || (process.platform === 'win32' && env.APPDATA) || path.join(os.homedir(), '.config');
  return path.join(base, 'video2mp3');
}

const sessionFile = () => path.join(configDir(), 'session.json');

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** Writes a file only its owner can read, replacing it atomically. */
export function writePrivate(file: string, data: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** The stored session with VIDEO2MP3_URL / VIDEO2MP3_TOKEN (and a --url) laid over it. */
export function loadSession(urlOption?: string, env: NodeJS.ProcessEnv = process.env): Partial<Session> {
  const stored: Partial<Session> = readJson<Session>(sessionFile()) ?? {};
  const url = urlOption ?? env.VIDEO2MP3_URL ?? stored.url;
  return { ...stored, url: url?.replace(/\/+$/, ''), token: env.VIDEO2MP3_TOKEN ?? stored.token };
}

export function saveSession(session: Session): string {
  writePrivate(sessionFile(), session);
  return sessionFile();
}

interface StoredUpload {
  size: number | null;
  metadata: Record<string, string>;
  creationTime: string;
  uploadUrl: string | null;
  parallelUploadUrls: string[] | null;
  urlStorageKey: string;
}

/** tus-js-client's URL storage, on disk: fingerprint (path, size, mtime, endpoint) → upload URL. */
export function createUrlStorage(file = path.join(configDir(), 'uploads.json')) {
  const all = () => readJson<Record<string, StoredUpload>>(file) ?? {};
  return {
    async findAllUploads() {
      return Object.values(all());
    },
    async findUploadsByFingerprint(fingerprint: string) {
      return Object.values(all()).filter((u) => u.urlStorageKey.startsWith(`${fingerprint}::`));
    },
    async removeUpload(key: string) {
      const uploads = all();
      delete uploads[key];
      writePrivate(file, uploads);
    },
    async addUpload(fingerprint: string, upload: Omit<StoredUpload, 'urlStorageKey'>) {
      const key = `${fingerprint}::${Date.now()}`;
      writePrivate(file, { ...all(), [key]: { ...upload, urlStorageKey: key } });
      return key;
    },
  };
}
