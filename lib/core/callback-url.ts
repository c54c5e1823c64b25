import net from 'node:net';
import { BadInputError } from './errors';

// Where a server-side request must never go unless allowed: loopback, "this network", private
// (RFC 1918, ULA), carrier-grade NAT, link-local (cloud metadata lives there), benchmarking,
// multicast and reserved ranges. IPv4-mapped IPv6 addresses are checked as IPv4.
const blocked = new net.BlockList();
for (const [net4, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net4, prefix, 'ipv4');
for (const [net6, prefix] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['64:ff9b::', 96], ['2001:db8::', 32]] as const) {
  blocked.addSubnet(net6, prefix, 'ipv6');
}

/** True for an address a webhook must not reach unless private targets are allowed. */
export function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return blocked.check(mapped[1]!, 'ipv4');
  const family = net.isIP(address);
  if (family === 0) return true; // not an address at all: refuse
  return blocked.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * Checks a callback URL given with an upload: http(s), no credentials, at most 2048 characters, and
 * (unless allowPrivate) not a literal private address or `localhost`. Names are resolved and checked
 * again when the webhook is sent (lib/mail/webhook.ts), so DNS cannot smuggle a private target in.
 */
export function parseCallbackUrl(value: unknown, opts: { allowPrivate: boolean }): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string' || value.length > 2048) throw new BadInputError('callbackUrl: must be one URL of at most 2048 characters');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new BadInputError('callbackUrl: not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new BadInputError('callbackUrl: must be an http or https URL');
  if (url.username || url.password) throw new BadInputError('callbackUrl: must not carry credentials');
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!opts.allowPrivate && (host === 'localhost' || host.endsWith('.localhost') || (net.isIP(host) !== 0 && isPrivateAddress(host)))) {
    throw new BadInputError('callbackUrl: loopback, link-local and private addresses are not allowed');
  }
  return url.toString();
}
