// The player page: wires the DOM to the Player. window.player is there for tests and curious people.

import { Rewind } from './dvr.js';
import { StatsOverlay } from './overlay.js';
import { Player } from './player.js';

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const video = /** @type {HTMLVideoElement} */ ($('video'));
const status = $('status');
const notice = $('notice');
const unmute = /** @type {HTMLButtonElement} */ ($('unmute'));
const statsButton = /** @type {HTMLButtonElement} */ ($('stats'));
const fullscreen = /** @type {HTMLButtonElement} */ ($('fullscreen'));
const playButton = /** @type {HTMLButtonElement} */ ($('play'));

const params = new URLSearchParams(location.search);
/** The stream this page plays: the relay names it in the page. */
const streamName = /** @type {HTMLMetaElement | null} */ (document.querySelector('meta[name="webm-relay-stream"]'))?.content || 'live';
const wsUrl = new URL(streamName, document.baseURI);
wsUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
// A protected stream's credentials (?token=, or ?exp=&sig= of a signed link) go on to the WebSocket and the picture.
const credentials = new URLSearchParams();
for (const key of ['token', 'exp', 'sig']) if (params.has(key)) credentials.set(key, /** @type {string} */ (params.get(key)));
wsUrl.search = credentials.toString();
document.title = `${streamName} · webm-relay`;
$('title').textContent = streamName;
// The latest keyframe as a picture until the first frame plays.
video.poster = new URL(`${streamName}/snapshot.jpg${wsUrl.search}`, document.baseURI).href;

// Tuning from the address, e.g. /?latency=0.5&back=30: seconds behind live to aim for, seconds kept behind the playhead.
const latency = {};
if (params.has('latency')) Object.assign(latency, { targetLatency: Number(params.get('latency')) });
const buffer = {};
if (params.has('back')) Object.assign(buffer, { backBufferSeconds: Number(params.get('back')), evictSlackSeconds: 1 });

const STATUS_TEXT = {
  connecting: 'connecting',
  buffering: 'starting',
  playing: 'live',
  reconnecting: 'reconnecting',
  full: 'relay full',
  unsupported: 'cannot play',
  denied: 'no access',
};

// ?transport=segments: HTTP segments (what a cache or CDN in front can serve) instead of the WebSocket.
const segmentsUrl = new URL(`${streamName}/`, document.baseURI);
segmentsUrl.search = credentials.toString();

/** @type {Rewind | null} The timeline, set up below once the player exists; the player's state callback stops it when access is refused. */
let rewind = null;
const player = new Player(video, {
  url: wsUrl.href,
  segmentsUrl: segmentsUrl.href,
  transport: params.get('transport') === 'segments' ? 'segments' : 'websocket',
  latency,
  buffer,
  onChange: (p) => {
    status.textContent = STATUS_TEXT[p.state];
    status.dataset.state = p.state;
    notice.textContent = p.message;
    notice.hidden = p.message === '';
    notice.classList.toggle('fatal', p.state === 'unsupported' || p.state === 'denied');
    if (p.state === 'denied' || p.state === 'unsupported') rewind?.stop();
  },
});
const overlay = new StatsOverlay($('overlay'), player);

// A timeline to rewind within the stream's dvr-window (js/dvr.js); hidden for a stream without one.
rewind = new Rewind({
  live: video,
  bar: $('dvr'),
  timeline: /** @type {HTMLInputElement} */ ($('dvr-timeline')),
  label: $('dvr-behind'),
  liveButton: /** @type {HTMLButtonElement} */ ($('dvr-live')),
  indexUrl: new URL(`${streamName}/dvr.json`, document.baseURI).href,
  credentials,
  lag: () => player.lag,
});
overlay.rewind = rewind;
void rewind.init();

function toggleMute() {
  video.muted = !video.muted;
  // Said before the volumechange event goes out: a listener that sees an unmute right
  // after a playbackRate change must not take the person's for the browser's (WebKit).
  player.latency.wantMuted = video.muted;
  if (!video.muted) video.volume = Math.max(video.volume, 0.5);
  unmute.textContent = video.muted ? 'Unmute' : 'Mute';
  unmute.setAttribute('aria-pressed', String(!video.muted));
}

function toggleStats() {
  statsButton.setAttribute('aria-pressed', String(overlay.toggle()));
}

function toggleFullscreen() {
  if (document.fullscreenElement) void document.exitFullscreen();
  else void $('stage').requestFullscreen();
}

// Paused (autoplay refused, a media key): a Play button, and a click on the picture, resume at the live edge.
video.addEventListener('pause', () => (playButton.hidden = false));
video.addEventListener('playing', () => (playButton.hidden = true));
playButton.addEventListener('click', () => player.play());
video.addEventListener('click', () => {
  if (video.paused) player.play();
});
unmute.addEventListener('click', toggleMute);
statsButton.addEventListener('click', toggleStats);
fullscreen.addEventListener('click', toggleFullscreen);
video.addEventListener('volumechange', () => (unmute.textContent = video.muted ? 'Unmute' : 'Mute'));
document.addEventListener('keydown', (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target instanceof HTMLInputElement) return;
  const key = event.key.toLowerCase();
  if (key === 'm') toggleMute();
  else if (key === 's' || key === 'i') toggleStats();
  else if (key === 'f') toggleFullscreen();
});

if (params.get('stats') === '1') toggleStats();

Object.assign(window, { player, dvr: rewind });
player.start(/** @type {any} */ (window).earlySocket);
