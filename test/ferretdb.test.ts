import { MongoClient } from 'mongodb';
import { describe, expect, it } from 'vitest';

// Under CI global-setup fails the run when FerretDB is missing; elsewhere it may be absent.
describe.runIf(process.env.TEST_MONGODB_URL)('FerretDB, the MongoDB-wire server of the tests', () => {
  it('when the mongodb driver pings it, then it answers ok', async () => {
    const client = new MongoClient(process.env.TEST_MONGODB_URL!, { serverSelectionTimeoutMS: 5000 });
    try {
      expect(await client.db('admin').command({ ping: 1 })).toMatchObject({ ok: 1 });
      const info = await client.db('admin').command({ buildInfo: 1 });
      expect(info.ferretdb ?? info.version).toBeTruthy();
    } finally {
      await client.close();
    }
  });
});
