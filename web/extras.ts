// The page's parts beyond uploading: playing a done MP3 with its cover and chapters, and the private
// podcast feed. They call the API through the page's `api` (which adds the token and turns failures
// into sentences), handed in by web/app.ts.

export type Call = (name: 'download', path: string, init?: RequestInit) => Promise<Response>;

const el = <K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {}) => Object.assign(document.createElement(tag), props);
const clock = (s: number) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;

/**
 * A player under a done job's row: the MP3, its cover and its chapter list (click one to jump there).
 * The MP3 needs the bearer token, which an <audio> element cannot send, so it is fetched as a blob.
 */
export async function showPlayer(row: HTMLElement, jobId: string, filename: string, call: Call): Promise<void> {
  row.querySelector('.player')?.remove();
  const box = el('div', { className: 'player' });
  row.append(box);
  const [mp3, chapters, cover] = await Promise.all([
    call('download', `/jobs/${jobId}/mp3`).then((r) => r.blob()),
    call('download', `/jobs/${jobId}/chapters`).then((r) => r.json() as Promise<{ chapters: { startTime: number; title: string }[] }>),
    call('download', `/jobs/${jobId}/cover`).then((r) => r.blob(), () => undefined),
  ]);
  if (cover) box.append(el('img', { src: URL.createObjectURL(cover), alt: `Cover of ${filename}` }));
  const audio = el('audio', { controls: true, src: URL.createObjectURL(mp3) });
  audio.setAttribute('aria-label', `Play ${filename}`);
  box.append(audio);
  if (chapters.chapters.length > 0) {
    const list = el('ol', { className: 'chapters' });
    list.setAttribute('aria-label', `Chapters of ${filename}`);
    for (const c of chapters.chapters) {
      const jump = el('button', { type: 'button', className: 'secondary', textContent: `${clock(c.startTime)} ${c.title}` });
      jump.addEventListener('click', () => { audio.currentTime = c.startTime; void audio.play(); });
      const item = el('li');
      item.append(jump);
      list.append(item);
    }
    box.append(list);
  }
}

const feedKey = 'video2mp3.feedUrl';

/**
 * The feed section: whether the user has a feed, its URL (the service shows it only when made, so
 * the page keeps it for the session), Copy, a new URL (the old one stops working) and Revoke.
 */
export function wireFeed(call: Call, say: (text: string, kind?: 'error' | 'info') => void): { load(): Promise<void> } {
  const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
  const show = (since: string | undefined) => {
    const url = sessionStorage.getItem(feedKey);
    $('feed-box').hidden = !url;
    $<HTMLInputElement>('feed-url').value = url ?? '';
    $('feed-revoke').hidden = !since;
    $('feed-rotate').textContent = since ? 'New feed URL' : 'Create feed URL';
    $('feed-status').textContent = !since
      ? 'Subscribe to your MP3s in a podcast app with a private feed URL.'
      : url ? 'Add this URL to your podcast app. Anyone who has it can listen: keep it to yourself.'
        : `You have a feed since ${new Date(since).toLocaleString()}. Its URL is shown only when made: make a new one to see it (the old one stops working).`;
  };
  const load = async () => {
    try {
      show(((await (await call('download', '/feed')).json()) as { createdAt: string }).createdAt);
    } catch (err) {
      if ((err as { status?: number }).status !== 404) throw err;
      sessionStorage.removeItem(feedKey);
      show(undefined);
    }
  };
  $('feed-rotate').addEventListener('click', () => void (async () => {
    try {
      const { url, createdAt } = (await (await call('download', '/feed', { method: 'POST' })).json()) as { url: string; createdAt: string };
      sessionStorage.setItem(feedKey, url);
      show(createdAt);
    } catch (err) {
      say((err as Error).message);
    }
  })());
  $('feed-revoke').addEventListener('click', () => void (async () => {
    try {
      await call('download', '/feed', { method: 'DELETE' });
      sessionStorage.removeItem(feedKey);
      show(undefined);
      say('Feed revoked: its URL no longer works.', 'info');
    } catch (err) {
      say((err as Error).message);
    }
  })());
  $('feed-copy').addEventListener('click', () => void (async () => {
    const input = $<HTMLInputElement>('feed-url');
    try {
      await navigator.clipboard.writeText(input.value);
    } catch {
      input.select(); // no clipboard permission: leave it selected for Ctrl+C
      return say('Select the URL and copy it with Ctrl+C.', 'info');
    }
    say('Feed URL copied.', 'info');
  })());
  return { load };
}
