// The stream list: every stream of the relay with a still picture, live state and viewers, refreshed every few seconds.

/** @typedef {import('../../src/protocol.js').StreamSummary} StreamSummary */

const REFRESH_MS = 3000;
/** Pictures are fetched again at most this often (each costs the relay a decode once per keyframe). */
const PICTURE_REFRESH_MS = 6000;

const list = /** @type {HTMLUListElement} */ (document.getElementById('streams'));
const updated = /** @type {HTMLElement} */ (document.getElementById('updated'));
/** @type {Map<string, { item: HTMLLIElement, img: HTMLImageElement, state: HTMLElement, viewers: HTMLElement, pictureAt: number }>} */
const cards = new Map();

/** @param {StreamSummary} stream */
function card(stream) {
  let entry = cards.get(stream.name);
  if (!entry) {
    const item = document.createElement('li');
    item.className = 'stream-card';
    item.dataset.name = stream.name;
    const link = document.createElement('a');
    link.href = stream.urls.player;
    const img = document.createElement('img');
    img.alt = `${stream.name}: latest picture`;
    img.width = 320;
    img.height = 180;
    const title = document.createElement('strong');
    title.textContent = stream.name;
    const state = document.createElement('span');
    state.className = 'status';
    const viewers = document.createElement('span');
    viewers.className = 'viewers';
    link.append(img, title);
    item.append(link, state, viewers);
    list.append(item);
    entry = { item, img, state, viewers, pictureAt: 0 };
    cards.set(stream.name, entry);
  }
  return entry;
}

async function refresh() {
  try {
    const response = await fetch('api/streams', { cache: 'no-store' });
    /** @type {{ streams: StreamSummary[] }} */
    const { streams } = await response.json();
    const now = Date.now();
    for (const stream of streams) {
      const entry = card(stream);
      entry.item.dataset.live = String(stream.live);
      entry.state.textContent = stream.live ? 'live' : 'offline';
      entry.state.dataset.state = stream.live ? 'playing' : 'reconnecting';
      entry.viewers.textContent = `${stream.viewers} watching`;
      // A protected stream the visitor may not watch is listed without its picture.
      const picture = stream.urls.snapshot;
      entry.item.dataset.access = String(stream.access);
      if (!stream.access) entry.state.textContent += stream.read === 'signed' ? ' · signed link needed' : ' · token needed';
      if (picture && stream.live && now - entry.pictureAt >= PICTURE_REFRESH_MS) {
        entry.img.src = `${picture}?t=${now}`;
        entry.pictureAt = now;
      }
      entry.img.hidden = !stream.live || !picture;
      if (!picture) entry.img.removeAttribute('src');
    }
    updated.textContent = `${streams.length} stream${streams.length === 1 ? '' : 's'}`;
  } catch (error) {
    updated.textContent = 'relay unreachable';
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
