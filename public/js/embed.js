// The lines that embed this stream on another site, with the page's token or signature in them when it has one.

const params = new URLSearchParams(location.search);
const streamName = /** @type {HTMLMetaElement | null} */ (document.querySelector('meta[name="webm-relay-stream"]'))?.content || 'live';
const credentials = new URLSearchParams();
for (const key of ['token', 'exp', 'sig']) if (params.has(key)) credentials.set(key, /** @type {string} */ (params.get(key)));
const query = credentials.toString() ? `?${credentials}` : '';

const player = new URL(`${streamName}/${query}`, document.baseURI).href;
const webm = new URL(`${streamName}.webm${query}`, document.baseURI).href;
const iframe = /** @type {HTMLElement} */ (document.getElementById('embed-iframe'));
const video = /** @type {HTMLElement} */ (document.getElementById('embed-video'));
iframe.textContent = `<iframe src="${player}" width="640" height="400" allow="autoplay; fullscreen" allowfullscreen style="border:0"></iframe>`;
video.textContent = `<video src="${webm}" autoplay muted controls playsinline></video>`;
