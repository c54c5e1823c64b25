/**
 * The blob store for videos and MP3s: GridFS when MONGODB_URI is set (lib/storage/gridfs-store.ts),
 * otherwise a directory (lib/storage/directory-store.ts); the contract is lib/storage/blob-store.ts.
 */
import path from 'node:path';
import { lazyClient } from '../core/clients';
import { getConfig, type Config } from '../core/config';
import { createDirectoryStore } from './directory-store';
import { createGridFsStore, parseMongoUri } from './gridfs-store';

export * from './blob-store';
export { createDirectoryStore } from './directory-store';
export { createGridFsStore, gridFsChunkSize } from './gridfs-store';

/** The instance's blob store: GridFS when MONGODB_URI is set, otherwise a directory in DATA_DIR. */
export const getBlobs = lazyClient(
  'blobs',
  async () => {
    const config = getConfig();
    return config.mongodbUri ? createGridFsStore(config.mongodbUri, config.timeouts.storageConnectMs) : createDirectoryStore(path.join(config.dataDir, 'blobs'));
  },
  (store) => store.close(),
);

/** A description of the blob store for start-up logs, without credentials. */
export function describeBlobs(config: Pick<Config, 'mongodbUri' | 'dataDir'>): string {
  if (!config.mongodbUri) return `directory ${path.join(config.dataDir, 'blobs')}`;
  const { hosts, dbName } = parseMongoUri(config.mongodbUri);
  return `gridfs ${hosts}/${dbName}`;
}
