// A minimal Kubernetes REST client for the control-plane tests (test/support/control-plane.ts): bearer
// token, the test CA, JSON in and out. Reading objects and writing the status the missing components
// would write (test/support/stand-ins.ts) is all the tests need; kubectl and kn do the rest.
import https from 'node:https';

/** A Kubernetes object as the API returns it; the tests read into it with their own types. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; generation?: number; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string>; ownerReferences?: { kind: string; name: string }[] };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  data?: Record<string, string>;
}

export class KubeApiError extends Error {
  constructor(readonly status: number, message: string) { super(message); }
}

export interface KubeApi {
  /** Whether a health path (`/readyz`) answers 200. */
  healthy(path: string): Promise<boolean>;
  /** GET a path (e.g. `/apis/apps/v1/namespaces/x/deployments`); 404 gives undefined. */
  get<T = KubeObject>(path: string): Promise<T | undefined>;
  /** The items of a list path. */
  list<T = KubeObject>(path: string): Promise<T[]>;
  /** POST an object to a collection path; an existing object is left as it is. */
  create(path: string, object: object): Promise<void>;
  /** JSON merge patch of an object's status subresource. */
  patchStatus(objectPath: string, status: object): Promise<void>;
}

export function createKubeApi(server: { host: string; port: number; ca: string; token: string }): KubeApi {
  function request(method: string, path: string, body?: object, contentType = 'application/json'): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = https.request({
        host: server.host, port: server.port, path, method, ca: server.ca, timeout: 10_000,
        headers: { authorization: `Bearer ${server.token}`, accept: 'application/json', ...(payload ? { 'content-type': contentType } : {}) },
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { text += c; });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  }
  const fail = (method: string, path: string, r: { status: number; text: string }) =>
    new KubeApiError(r.status, `${method} ${path}: ${r.status} ${r.text.slice(0, 500)}`);

  return {
    healthy: (path) => request('GET', path).then((r) => r.status === 200, () => false),
    async get<T>(path: string) {
      const r = await request('GET', path);
      if (r.status === 404) return undefined;
      if (r.status !== 200) throw fail('GET', path, r);
      return JSON.parse(r.text) as T;
    },
    async list<T>(path: string) {
      const r = await request('GET', path);
      if (r.status !== 200) throw fail('GET', path, r);
      return (JSON.parse(r.text) as { items: T[] }).items;
    },
    async create(path, object) {
      const r = await request('POST', path, object);
      if (r.status !== 201 && r.status !== 200 && r.status !== 409) throw fail('POST', path, r);
    },
    async patchStatus(objectPath, status) {
      const r = await request('PATCH', `${objectPath}/status`, { status }, 'application/merge-patch+json');
      if (r.status !== 200) throw fail('PATCH', `${objectPath}/status`, r);
    },
  };
}
