// A podcast feed as RSS 2.0 with the Apple Podcasts (itunes) and Podcasting 2.0 (podcast) namespaces.

export interface FeedItem {
  title: string;
  guid: string;
  pubDate: Date;
  durationSeconds: number;
  enclosure: { url: string; length: number };
  imageUrl?: string;
  chaptersUrl?: string;
}

export interface FeedChannel {
  title: string;
  description: string;
  link: string;
  selfUrl: string;
  items: FeedItem[];
}

const escapes: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };
// Characters XML 1.0 does not allow at all (a control character in a file name) are dropped.
const xml = (text: string) => text.replace(/[^\t\n\r -\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]/gu, '').replace(/[&<>"']/g, (c) => escapes[c]!);

/** 3725 → "01:02:05", the form every podcast app reads. */
function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60].map((n) => String(n).padStart(2, '0')).join(':');
}

function renderItem(item: FeedItem): string {
  return [
    '<item>',
    `<title>${xml(item.title)}</title>`,
    `<guid isPermaLink="false">${xml(item.guid)}</guid>`,
    `<pubDate>${item.pubDate.toUTCString()}</pubDate>`,
    `<enclosure url="${xml(item.enclosure.url)}" length="${item.enclosure.length}" type="audio/mpeg"/>`,
    `<itunes:duration>${duration(item.durationSeconds)}</itunes:duration>`,
    ...(item.imageUrl ? [`<itunes:image href="${xml(item.imageUrl)}"/>`] : []),
    ...(item.chaptersUrl ? [`<podcast:chapters url="${xml(item.chaptersUrl)}" type="application/json+chapters"/>`] : []),
    '</item>',
  ].join('\n');
}

/**
 * The feed document. It is private: `itunes:block` and `podcast:block` ask directories not to list
 * it should its URL ever be submitted to one.
 */
export function renderFeed(channel: FeedChannel): string {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" xmlns:podcast="https://podcastindex.org/namespace/1.0" xmlns:atom="http://www.w3.org/2005/Atom">',
    '<channel>',
    `<title>${xml(channel.title)}</title>`,
    `<link>${xml(channel.link)}</link>`,
    `<description>${xml(channel.description)}</description>`,
    `<atom:link href="${xml(channel.selfUrl)}" rel="self" type="application/rss+xml"/>`,
    '<itunes:block>Yes</itunes:block>',
    '<podcast:block>yes</podcast:block>',
    '<itunes:explicit>false</itunes:explicit>',
    ...channel.items.map(renderItem),
    '</channel>',
    '</rss>',
    '',
  ].join('\n');
}
