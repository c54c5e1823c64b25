import net from 'node:net';

/**
 * A TCP proxy in front of a real service, so a test can make that service unreachable (and cut the
 * connections a client holds, as a broker restart or a dropped Wi-Fi does), bring it back on the same
 * address, and slow the client's bytes down to a rate at which it can be cut mid-upload.
 */
export interface Proxy {
  port: number;
  /** Bytes a second passed from clients to the service (Infinity: as fast as they come); may change any time. */
  rate: number;
  /** Bytes passed from clients to the service so far. */
  readonly bytesUp: number;
  /** Refuse new connections and reset the open ones. */
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

/** `port` picks the proxy's own port (0: any free one), for a service that must know its public address first. */
export async function startProxy(target: { host: string; port: number }, opts: { port?: number } = {}): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  let port = opts.port ?? 0;
  let bytesUp = 0;

  /** Client → service, paused while the service is full and for as long as `rate` says the chunk takes. */
  const forward = (client: net.Socket, upstream: net.Socket) => {
    client.on('data', (chunk: Buffer) => {
      bytesUp += chunk.length;
      const full = !upstream.write(chunk);
      const wait = Number.isFinite(proxy.rate) ? (chunk.length / proxy.rate) * 1000 : 0;
      if (!full && wait === 0) return;
      client.pause();
      let pending = (full ? 1 : 0) + (wait > 0 ? 1 : 0);
      const go = () => { if (--pending === 0) client.resume(); };
      if (full) upstream.once('drain', go);
      if (wait > 0) setTimeout(go, wait);
    });
    client.on('end', () => upstream.end());
  };

  const listen = () => new Promise<void>((resolve, reject) => {
    server = net.createServer((client) => {
      const upstream = net.connect(target.port, target.host);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
        s.on('error', () => { client.destroy(); upstream.destroy(); });
      }
      forward(client, upstream);
      upstream.pipe(client);
    });
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      port = (server!.address() as net.AddressInfo).port;
      resolve();
    });
  });
  const down = async () => {
    for (const s of sockets) s.resetAndDestroy();
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
    server = undefined;
  };
  const proxy: Proxy = {
    rate: Number.POSITIVE_INFINITY,
    get port() { return port; },
    get bytesUp() { return bytesUp; },
    down,
    up: listen,
    close: down,
  };
  await listen();
  return proxy;
}
