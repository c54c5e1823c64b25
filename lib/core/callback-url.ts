import dns from 'node:dns';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { BadInputError } from './errors';

// Where a server-side request must never go unless allowed: loopback, "this network", private
// (RFC 1918, ULA), carrier-grade NAT, link-local (cloud metadata lives there), benchmarking,
// multicast and reserved ranges. IPv6 forms that carry an IPv4 address are checked as that address
// (embeddedIpv4).
const blocked = new net.BlockList();
for (const [net4, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net4, prefix, 'ipv4');
for (const [net6, prefix] of [
  ['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8], ['100::', 64], ['2001:db8::', 32],
  ['64:ff9b:1::', 48], // local-use NAT64 (RFC 8215): whatever it reaches is the local network's choice
] as const) {
  blocked.addSubnet(net6, prefix, 'ipv6');
}

const v4 = (b: number[], at: number) => b.slice(at, at + 4).join('.');

/**
 * The IPv4 addresses an IPv6 address stands for, when it is one of the forms that carry one: IPv4-
 * compatible (::a.b.c.d), IPv4-mapped (::ffff:a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d), NAT64
 * (64:ff9b::a.b.c.d), 6to4 (2002:aabb:ccdd::) and Teredo (2001:0::, its server, and its client
 * stored inverted). A request to any of them may end up at that IPv4 address.
 */
function embeddedIpv4(address: string): string[] {
  const b = ipaddr.IPv6.parse(address).toByteArray();
  const zeros = (from: number, to: number) => b.slice(from, to).every((x) => x === 0);
  const found: string[] = [];
  if (zeros(0, 10) && ((b[10] === 0 && b[11] === 0) || (b[10] === 0xff && b[11] === 0xff))) found.push(v4(b, 12));
  if (zeros(0, 8) && b[8] === 0xff && b[9] === 0xff && b[10] === 0 && b[11] === 0) found.push(v4(b, 12));
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zeros(4, 12)) found.push(v4(b, 12));
  if (b[0] === 0x20 && b[1] === 0x02) found.push(v4(b, 2));
  if (b[0] === 0x20 && b[1] === 0x01 && b[2] === 0 && b[3] === 0) found.push(v4(b, 4), b.slice(12).map((x) => x ^ 0xff).join('.'));
  return found;
}

/**
 * Whether `address` (private) is allowed: all private addresses (true), none (false), or those
 * listed. An IPv6 form that carries an IPv4 address is allowed only when every IPv4 address it
 * stands for is listed, or the IPv6 address itself is.
 */
function allowed(allow: boolean | net.BlockList, address: string): boolean {
  if (typeof allow === 'boolean') return allow;
  if (net.isIP(address) === 4) return allow.check(address, 'ipv4');
  if (allow.check(address, 'ipv6')) return true;
  const carried = embeddedIpv4(address);
  return carried.length > 0 && carried.every((a) => allow.check(a, 'ipv4'));
}

/** True for an address a webhook must not reach unless private targets are allowed. */
export function isPrivateAddress(address: string): boolean {
  const family = net.isIP(address);
  if (family === 0) return true; // not an address at all: refuse
  if (family === 4) return blocked.check(address, 'ipv4');
  return blocked.check(address, 'ipv6') || embeddedIpv4(address).some((a) => blocked.check(a, 'ipv4'));
}

/**
 * Checks a callback URL given with an upload: http(s), no credentials, at most 2048 characters, and
 * (unless allowPrivate) not a literal private address or `localhost`. Names are resolved and checked
 * again when the webhook is sent (lib/mail/webhook.ts), so DNS cannot smuggle a private target in.
 * A URL import's source (`field` url) is checked the same way, at every redirect hop.
 */
export function parseCallbackUrl(value: unknown, opts: { allowPrivate: boolean | net.BlockList }, field = 'callbackUrl'): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string' || value.length > 2048) throw new BadInputError(`${field}: must be one URL of at most 2048 characters`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new BadInputError(`${field}: not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new BadInputError(`${field}: must be an http or https URL`);
  if (url.username || url.password) throw new BadInputError(`${field}: must not carry credentials`);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const named = host === 'localhost' || host.endsWith('.localhost');
  if (opts.allowPrivate !== true && (named || (net.isIP(host) !== 0 && isPrivateAddress(host) && !allowed(opts.allowPrivate, host)))) {
    throw new BadInputError(`${field}: loopback, link-local and private addresses are not allowed`);
  }
  return url.toString();
}

/** A server-side request was about to reach a private address (see isPrivateAddress). */
export class PrivateAddressError extends Error {
  override name = 'PrivateAddressError';
}

/**
 * dns.lookup that refuses private addresses unless allowed: the address checked is the address
 * connected to, so a name cannot resolve to one thing when checked and another when used.
 */
export function guardedLookup(allowPrivate: boolean | net.BlockList): net.LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const list = addresses as dns.LookupAddress[];
      const refused = list.find((a) => isPrivateAddress(a.address) && !allowed(allowPrivate, a.address));
      if (refused) return callback(new PrivateAddressError(`${hostname} resolves to a private address (${refused.address})`), '', 0);
      if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, list);
      callback(null, list[0]!.address, list[0]!.family);
    });
  };
}
