// The publish page: records the camera, a microphone or the screen with MediaRecorder and
// sends the WebM chunks over WebSocket /<name>/publish. window.publisher is there for tests.

/** @typedef {import('../../src/protocol.js').PublishingMessage} PublishingMessage */

const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);
const streamName = /** @type {HTMLMetaElement | null} */ (document.querySelector('meta[name="webm-relay-stream"]'))?.content || 'live';
const socketUrl = new URL(`${streamName}/publish`, document.baseURI);
socketUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';

/** src/protocol.ts PUBLISH_PROTOCOL and PUBLISH_TOKEN_PROTOCOL_PREFIX: the token goes as a subprotocol, never in the URL (which ends up in logs). */
const PUBLISH_PROTOCOL = 'webm-relay.publish';
const TOKEN_PROTOCOL_PREFIX = 'webm-relay.token.';

/** A chunk every this many ms: small enough that viewers see it soon, large enough to cost little per message. */
const TIMESLICE_MS = 200;
const KEYFRAME_INTERVAL_MS = 1000;
/** More than this waiting in the socket: the uplink cannot carry the bitrate; start over. */
const MAX_BUFFERED_BYTES = 8 << 20;
const VIDEO_BITS_PER_SECOND = 1_500_000;
const AUDIO_BITS_PER_SECOND = 64_000;

/** Close codes of src/protocol.ts PUBLISH_CLOSE_REASONS: what the page says and whether it tries again. */
const CLOSES = /** @type {Record<number, { text: string, retryMs: number | null }>} */ ({
  4401: { text: 'The relay needs this stream\'s publish token.', retryMs: null },
  4403: { text: 'Wrong publish token.', retryMs: null },
  4405: { text: 'This stream does not take a stream from a browser.', retryMs: null },
  4409: { text: 'Someone else is publishing this stream. Trying again every 5 seconds.', retryMs: 5000 },
  4400: { text: 'The relay could not read what this browser records.', retryMs: null },
  4415: { text: 'This browser records in codecs other browsers cannot play from WebM.', retryMs: null },
  4429: { text: 'Too many failed attempts from this address. Trying again in 10 seconds.', retryMs: 10000 },
  1009: { text: 'A recorded chunk was larger than the relay accepts.', retryMs: null },
});

const title = $('title');
title.textContent = `Go live: ${streamName}`;
document.title = `Go live: ${streamName} · webm-relay`;
$('watch').href = `./${encodeURIComponent(streamName)}/`;
const tokenInput = /** @type {HTMLInputElement} */ ($('token'));
tokenInput.value = params.get('token') ?? '';
// ?source=screen: share the screen (with autostart, a room PC that shows its screen on boot).
if (params.get('source') === 'screen') $('source').value = 'screen';

const state = {
  state: 'idle',
  message: '',
  closeCode: 0,
  closeReason: '',
  mimeType: '',
  keyframeIntervalMs: /** @type {number | null} */ (null),
  bytesSent: 0,
  chunks: 0,
  viewers: /** @type {number | null} */ (null),
  liveSince: /** @type {number | null} */ (null),
  connections: 0,
  /** The subprotocol the relay chose (the token offered beside it is never echoed). */
  protocol: '',
  reconnects: 0,
  recorders: 0,
};
/** @type {MediaStream | null} */
let media = null;
/** @type {WebSocket | null} */
let socket = null;
/** @type {MediaRecorder | null} */
let recorder = null;
let wanted = false;
let failures = 0;
let retryTimer = 0;
/** @type {{ at: number, bytes: number }[]} */
const sent = [];

function show(/** @type {string} */ status, /** @type {string} */ message = '') {
  state.state = status;
  state.message = message;
  $('status').textContent = { idle: 'not live', connecting: 'connecting', live: 'live', reconnecting: 'reconnecting', refused: 'refused', stopped: 'stopped', error: 'cannot go live' }[status] ?? status;
  $('status').dataset.state = status === 'live' ? 'playing' : status === 'refused' || status === 'error' ? 'unsupported' : 'reconnecting';
  $('notice').textContent = message;
  $('notice').hidden = message === '';
  $('golive').hidden = wanted;
  $('stop').hidden = !wanted;
}

/** VP8 first (cheaper to encode live), VP9 if asked for with ?codec=vp9 or if VP8 is missing; Opus with sound. */
function chooseMimeType(/** @type {boolean} */ withAudio) {
  const video = params.get('codec') === 'vp9' ? ['vp9', 'vp8'] : ['vp8', 'vp9'];
  for (const codec of video) {
    const type = `video/webm;codecs=${withAudio ? `${codec},opus` : codec}`;
    if (MediaRecorder.isTypeSupported(type)) return type;
  }
  return null;
}

async function openMedia() {
  const source = $('source').value;
  const camera = $('camera').value;
  const microphone = $('microphone').value;
  const audio = microphone === 'none' ? false : microphone ? { deviceId: { exact: microphone } } : true;
  if (source === 'screen') {
    const screen = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio: true });
    if (audio && screen.getAudioTracks().length === 0) {
      // No sound from the screen (most systems): the microphone instead.
      const mic = await navigator.mediaDevices.getUserMedia({ audio });
      for (const track of mic.getAudioTracks()) screen.addTrack(track);
    }
    return screen;
  }
  // The camera's own size unless the address asks (?width=1280&height=720): scaling costs the encoder.
  const size = params.has('width') ? { width: { ideal: Number(params.get('width')) }, height: { ideal: Number(params.get('height') ?? 0) || undefined } } : {};
  const video = camera || params.has('width') ? { ...size, ...(camera ? { deviceId: { exact: camera } } : {}) } : true;
  return navigator.mediaDevices.getUserMedia({ video, audio });
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of /** @type {const} */ ([['videoinput', $('camera')], ['audioinput', $('microphone')]])) {
    const chosen = select.value;
    for (const option of [...select.options]) if (option.value !== '' && option.value !== 'none') option.remove();
    for (const device of devices.filter((d) => d.kind === kind && d.deviceId)) {
      const option = new Option(device.label || `${kind} ${select.options.length}`, device.deviceId);
      select.add(option);
    }
    select.value = chosen;
  }
}

async function preview() {
  for (const track of media?.getTracks() ?? []) track.stop();
  media = await openMedia();
  $('preview').srcObject = media;
  for (const track of media.getVideoTracks()) track.addEventListener('ended', () => stop('The source ended (screen sharing stopped?).'));
  void listDevices();
}

async function goLive() {
  if (wanted) return;
  if (!('MediaRecorder' in window)) return show('error', 'This browser has no MediaRecorder.');
  wanted = true;
  show('connecting', '');
  try {
    if (!media) await preview();
  } catch (error) {
    wanted = false;
    return show('error', `No camera or screen: ${/** @type {Error} */ (error).message}`);
  }
  connect();
}

function connect() {
  clearTimeout(retryTimer);
  state.connections++;
  if (state.connections > 1) state.reconnects++;
  $('reconnects').textContent = String(state.reconnects);
  const token = tokenInput.value;
  const ws = new WebSocket(socketUrl.href, token ? [PUBLISH_PROTOCOL, TOKEN_PROTOCOL_PREFIX + base64url(token)] : [PUBLISH_PROTOCOL]);
  socket = ws;
  ws.onopen = () => {
    state.protocol = ws.protocol;
    // No token: the relay says so (4401) at once instead of waiting for one.
    if (!token) ws.send(JSON.stringify({ type: 'auth', token: '' }));
  };
  ws.onmessage = (event) => {
    if (typeof event.data !== 'string') return;
    /** @type {PublishingMessage} */
    const message = JSON.parse(event.data);
    if (message.type !== 'publishing') return;
    state.viewers = message.viewers;
    if (!recorder) startRecorder(ws);
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    stopRecorder();
    state.closeCode = event.code;
    state.closeReason = event.reason;
    if (!wanted) return;
    const known = CLOSES[event.code];
    if (known && known.retryMs === null) {
      wanted = false;
      return show('refused', `${known.text}${event.reason ? ` (${event.reason})` : ''}`);
    }
    failures++;
    const delay = known?.retryMs ?? Math.min(10_000, 500 * 2 ** Math.min(failures, 5));
    show(known ? 'refused' : 'reconnecting', known ? known.text : `Connection lost (${event.code}). Reconnecting in ${Math.round(delay / 1000)} s.`);
    retryTimer = setTimeout(() => wanted && connect(), delay);
  };
}

/** A subprotocol may hold only an HTTP token's characters: the token as base64url of its UTF-8. */
function base64url(/** @type {string} */ text) {
  let binary = '';
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function startRecorder(/** @type {WebSocket} */ ws) {
  if (!media) return;
  const mimeType = chooseMimeType(media.getAudioTracks().length > 0);
  if (!mimeType) {
    wanted = false;
    ws.close(1000);
    return show('error', 'This browser cannot record VP8 or VP9 WebM.');
  }
  // Whether this browser knows videoKeyFrameIntervalDuration: a dictionary member it knows is read.
  let keyframeOptionRead = false;
  const options = {
    mimeType,
    videoBitsPerSecond: VIDEO_BITS_PER_SECOND,
    audioBitsPerSecond: AUDIO_BITS_PER_SECOND,
    get videoKeyFrameIntervalDuration() {
      keyframeOptionRead = true;
      return KEYFRAME_INTERVAL_MS;
    },
  };
  const next = new MediaRecorder(media, options);
  recorder = next;
  state.recorders++;
  state.mimeType = mimeType;
  state.keyframeIntervalMs = keyframeOptionRead ? KEYFRAME_INTERVAL_MS : null;
  $('format').textContent = mimeType.replace('video/webm;codecs=', 'WebM ');
  $('keyframes').textContent = keyframeOptionRead
    ? 'every second: a new viewer starts within a second'
    : 'as this browser decides (it cannot be asked for more): a new viewer may wait several seconds for a picture';
  next.ondataavailable = (event) => {
    if (recorder !== next || event.data.size === 0 || ws.readyState !== WebSocket.OPEN) return;
    ws.send(event.data);
    state.bytesSent += event.data.size;
    state.chunks++;
    sent.push({ at: performance.now(), bytes: event.data.size });
    if (ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      // The uplink falls behind: drop the connection and begin again at a keyframe, with a new recording.
      ws.close(4000, 'uplink too slow');
    }
  };
  next.onerror = () => ws.close(4000, 'recorder failed');
  next.start(TIMESLICE_MS);
  failures = 0;
  state.liveSince ??= Date.now();
  show('live', '');
}

function stopRecorder() {
  const current = recorder;
  recorder = null;
  if (current && current.state !== 'inactive') current.stop();
}

function stop(/** @type {string} */ message = '') {
  wanted = false;
  clearTimeout(retryTimer);
  stopRecorder();
  const ws = socket;
  socket = null;
  ws?.close(1000);
  state.liveSince = null;
  show('stopped', message);
}

function tick() {
  const now = performance.now();
  while (sent.length > 0 && now - sent[0].at > 3000) sent.shift();
  const bits = sent.reduce((total, s) => total + s.bytes * 8, 0) / 3;
  $('bitrate').textContent = state.state === 'live' ? `${Math.round(bits / 1000)} kbit/s` : '–';
  $('viewers').textContent = state.viewers === null ? '–' : String(state.viewers);
  const seconds = state.liveSince === null ? null : Math.floor((Date.now() - state.liveSince) / 1000);
  $('uptime').textContent = seconds === null ? '–' : `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}
setInterval(tick, 1000);

$('golive').addEventListener('click', () => void goLive());
$('stop').addEventListener('click', () => stop());
for (const id of ['source', 'camera', 'microphone']) {
  $(id).addEventListener('change', () => {
    // A new source while live: a new recording (the relay sees a producer restart).
    void preview().then(() => {
      if (wanted && socket) socket.close(4000, 'source changed');
    }, (error) => show('error', `No camera or screen: ${error.message}`));
  });
}

Object.assign(window, { publisher: { snapshot: () => ({ ...state, bitrate: sent.reduce((t, s) => t + s.bytes * 8, 0) / 3 }), goLive, stop } });
if (params.get('autostart') === '1') void goLive();
else void preview().catch(() => {});
