type Closer = () => Promise<void>;
const closers = new Map<string, Closer>();

/**
 * A client created once per instance, on first use, and closed by closeClients(). The factory's
 * promise is cached, so concurrent first calls share one connection attempt; a failed attempt is
 * forgotten so the next call tries again.
 */
export function lazyClient<T>(name: string, create: () => Promise<T>, close: (client: T) => Promise<void>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  const get = (): Promise<T> => {
    if (!pending) {
      const attempt = create();
      pending = attempt;
      attempt.then(
        (client) => closers.set(name, async () => {
          if (pending === attempt) pending = undefined;
          closers.delete(name);
          await close(client);
        }),
        () => { if (pending === attempt) pending = undefined; },
      );
    }
    return pending;
  };
  return get;
}

const stoppers = new Set<() => Promise<void>>();

/**
 * Registers work that outlives its request (a URL import): closeClients first stops it, and waits
 * for it to record how it ended, while the clients it records with are still open. Returns the
 * unregister function, to call when the work ends.
 */
export function trackWork(stop: () => Promise<void>): () => void {
  stoppers.add(stop);
  return () => stoppers.delete(stop);
}

/** Closes every client created so far (graceful shutdown, or a test switching backends). */
export async function closeClients(): Promise<void> {
  await Promise.allSettled([...stoppers].map((stop) => stop()));
  const all = [...closers.values()];
  await Promise.allSettled(all.map((c) => c()));
}
