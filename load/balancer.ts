// What stands in front of a function's replicas on Knative (the activator and each pod's queue-proxy),
// reduced to what a load test needs: requests go round the replicas in turn, and a replica takes at
// most `containerConcurrency` at once (0: no limit), the rest waiting in line as queue-proxy holds them.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Balancer {
  url: string;
  close(): Promise<void>;
}

interface Backend { port: number; active: number }

/** Starts a loopback balancer over `ports`; requests are forwarded as they are, Host header included. */
export async function startBalancer(ports: number[], containerConcurrency = 0): Promise<Balancer> {
  const backends: Backend[] = ports.map((port) => ({ port, active: 0 }));
  const waiting: ((b: Backend) => void)[] = [];
  let next = 0;

  const free = (b: Backend) => containerConcurrency === 0 || b.active < containerConcurrency;
  /** The next replica in turn that has room, or undefined when all are full. */
  const pick = (): Backend | undefined => {
    for (let i = 0; i < backends.length; i++) {
      const b = backends[(next + i) % backends.length]!;
      if (free(b)) {
        next = (next + i + 1) % backends.length;
        return b;
      }
    }
    return undefined;
  };
  const acquire = () => new Promise<Backend>((resolve) => {
    const b = pick();
    if (b) { b.active++; resolve(b); } else waiting.push((w) => { w.active++; resolve(w); });
  });
  const release = (b: Backend) => {
    b.active--;
    const w = waiting.shift();
    if (w) w(b);
  };

  const server = http.createServer((req, res) => {
    void acquire().then((backend) => {
      let released = false;
      const done = () => { if (!released) { released = true; release(backend); } };
      const upstream = http.request({ host: '127.0.0.1', port: backend.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
        up.on('end', done);
        up.on('error', done);
      });
      upstream.on('error', () => {
        done();
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
        res.end('{"error":"bad_gateway"}');
      });
      res.on('close', done);
      req.pipe(upstream);
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
