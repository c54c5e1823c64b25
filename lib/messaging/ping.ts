import { HTTP } from 'cloudevents';
import { log } from '../core/log';
import { maintenanceTick } from './events';

/**
 * The local stand-in for the Knative PingSource of knative/55-maintenance.yaml (`npm start` and the
 * tests, never a cluster): POSTs a maintenance tick to `sink` now and every `intervalMs`. A tick that
 * fails (a backend down: 503) is only logged; the next one tries again. Ticks never overlap.
 */
export function startPing(opts: { sink: string; intervalMs: number }): { stop(): Promise<void> } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();

  const tick = async () => {
    const message = HTTP.binary(maintenanceTick());
    try {
      const res = await fetch(opts.sink, { method: 'POST', headers: message.headers as Record<string, string>, body: message.body as string });
      const body = await res.text();
      if (res.ok) log.debug({ status: res.status, body }, 'maintenance tick');
      else log.warn({ status: res.status, body }, 'maintenance tick failed; the next one tries again');
    } catch (err) {
      log.warn({ err }, 'maintenance tick failed; the next one tries again');
    }
  };
  const loop = () => {
    if (stopped) return;
    running = tick().finally(() => {
      if (!stopped) timer = setTimeout(loop, opts.intervalMs);
    });
  };
  loop();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
