// Rewinding the live stream: a timeline under the player that reaches back up to the
// stream's dvr-window (the relay's dvr.json: recorded streams on disk and in memory, any
// other within the segments held in memory). Dragging back plays the segments from that
// moment in a second <video> at normal speed (js/rewind-loader.js); "Live" shows the live
// player again. The live player keeps running meanwhile (silenced), so going back to live
// is instant and at the live edge.

import { RewindLoader } from './rewind-loader.js';

/** How often the timeline and the label follow the playhead, ms. */
const TICK_MS = 500;
/** A timeline dropped this close to its right end means live, s. */
const LIVE_SNAP_S = 2;
/** How often the reach of the timeline is read again while live, ms. */
const REFRESH_MS = 10_000;

/** @param {number} seconds */
export function formatBehind(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 1) return 'live';
  const m = Math.floor(s / 60);
  return m > 0 ? `−${m}:${String(s % 60).padStart(2, '0')}` : `−${s} s`;
}

export class Rewind {
  /**
   * @param {{
   *   live: HTMLVideoElement, bar: HTMLElement, timeline: HTMLInputElement,
   *   label: HTMLElement, liveButton: HTMLButtonElement, indexUrl: string,
   *   credentials: URLSearchParams, lag: () => number,
   * }} options
   */
  constructor(options) {
    this.o = options;
    // Put in the page at the first rewind: until then the page has its one <video>.
    this.rewind = document.createElement('video');
    this.rewind.id = 'rewind';
    this.rewind.playsInline = true;
    this.rewind.disablePictureInPicture = true;
    this.rewind.style.display = 'none';
    this.loader = new RewindLoader(this.rewind, options.indexUrl, options.credentials);
    this.rewinding = false;
    /** Seconds the timeline may reach back (dvr-window). */
    this.windowS = 0;
    /** Wall-clock start of the oldest segment (relay clock, ms). */
    this.earliestMs = Infinity;
    this.dragging = false;
    this.savedVolume = 1;
    /** @type {string | null} */
    this.error = null;
    this.timer = 0;
    this.refreshTimer = 0;
    /** Set by stop(): access was refused, or the player gave up; nothing more is asked of the relay. */
    this.stopped = false;
  }

  /** Seconds behind live: of the picture being rewound to, or the live player's lag. */
  get behind() {
    if (!this.rewinding) return this.o.lag();
    const position = this.loader.positionMs();
    return position === null ? 0 : (this.loader.now() - position) / 1000;
  }

  /** Wall-clock time (relay clock, ms) of the rewound picture, or null when live. */
  positionMs() {
    return this.rewinding ? this.loader.positionMs() : null;
  }

  /** Shows the timeline if the stream has one. */
  async init() {
    if (!(await this.refresh()) || this.stopped) return;
    const { timeline, liveButton, bar } = this.o;
    bar.hidden = false;
    timeline.addEventListener('input', () => {
      this.dragging = true;
      this.o.label.textContent = formatBehind(-Number(timeline.value));
    });
    timeline.addEventListener('change', () => {
      this.dragging = false;
      const back = -Number(timeline.value);
      if (back < LIVE_SNAP_S) this.goLive();
      else void this.seekBack(back);
    });
    liveButton.addEventListener('click', () => this.goLive());
    this.timer = window.setInterval(() => this.tick(), TICK_MS);
    this.refreshTimer = window.setInterval(() => {
      if (!this.rewinding) void this.refresh();
    }, REFRESH_MS);
    this.tick();
  }

  /** Reads how far back the window reaches; false when the stream has no timeline. */
  async refresh() {
    try {
      const index = await this.loader.fetchIndex(true);
      this.windowS = index.window;
      this.earliestMs = index.segments[0]?.start ?? Infinity;
      return index.window > 0;
    } catch (error) {
      // A refused link (expired, revoked) stays refused: asking every 10 s only fills the relay's log.
      if (error instanceof Error && /HTTP 40[13]$/.test(error.message)) this.stop();
      return false;
    }
  }

  /** The timeline goes away and asks the relay nothing more (the player was refused, or gave up). */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    window.clearInterval(this.timer);
    window.clearInterval(this.refreshTimer);
    if (this.rewinding) this.goLive();
    this.o.bar.hidden = true;
  }

  /** Seconds the timeline can reach back now. */
  reach() {
    const index = this.loader.index;
    if (index && index.segments.length > 0) this.earliestMs = index.segments[0].start;
    return Math.max(0, Math.min(this.windowS, (this.loader.now() - this.earliestMs) / 1000));
  }

  /**
   * Plays the stream from `seconds` before now.
   * @param {number} seconds
   */
  async seekBack(seconds) {
    await this.refresh();
    const targetMs = this.loader.now() - Math.min(seconds, this.reach()) * 1000;
    const { live } = this.o;
    const rewind = this.rewind;
    if (!rewind.isConnected) live.after(rewind);
    if (!this.rewinding) {
      this.savedVolume = live.volume;
      rewind.muted = live.muted;
      rewind.volume = live.volume;
    }
    try {
      await this.loader.start(targetMs);
    } catch (error) {
      this.error = error instanceof Error ? error.message : String(error);
      if (!this.rewinding) return;
      this.goLive();
      return;
    }
    this.error = null;
    if (!this.rewinding) live.volume = 0;
    this.rewinding = true;
    rewind.style.display = 'block';
    live.style.display = 'none';
    this.tick();
  }

  goLive() {
    const { live } = this.o;
    if (this.rewinding) live.volume = this.savedVolume;
    this.rewinding = false;
    this.loader.stop();
    this.rewind.style.display = 'none';
    live.style.display = '';
    this.tick();
  }

  tick() {
    const { timeline, label, liveButton } = this.o;
    const reach = Math.max(1, Math.round(this.reach()));
    timeline.min = String(-reach);
    timeline.max = '0';
    if (this.dragging) return;
    const behind = this.rewinding ? this.behind : 0;
    timeline.value = String(-Math.min(reach, behind));
    label.textContent = this.rewinding ? formatBehind(behind) : 'live';
    liveButton.disabled = !this.rewinding;
  }

  snapshot() {
    const loader = this.loader;
    return {
      rewinding: this.rewinding,
      behind: this.behind,
      reach: this.reach(),
      window: this.windowS,
      error: this.error ?? loader.error,
      currentTime: this.rewind.currentTime,
      fetched: { ...loader.fetched },
      placements: loader.placements,
      starts: loader.starts,
      bufferedRanges: this.rewind.buffered.length,
    };
  }
}
