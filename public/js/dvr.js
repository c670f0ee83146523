// Rewinding a recorded stream: a timeline under the player that reaches back up to the
// stream's dvr-window into its recordings. Dragging back plays a cut of the recordings
// (`recordings/NAME/range.webm?from=`) in a second <video> at normal speed, one cut after
// another; "Live" shows the live player again. The live player keeps running meanwhile
// (silenced), so going back to live is instant and at the live edge.

/** How often the timeline and the label follow the playhead, ms. */
const TICK_MS = 500;
/** A timeline dropped this close to its right end means live, s. */
const LIVE_SNAP_S = 2;

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
   *   label: HTMLElement, liveButton: HTMLButtonElement, apiUrl: string, recordingsUrl: string,
   *   credentials: URLSearchParams, lag: () => number,
   * }} options
   */
  constructor(options) {
    this.o = options;
    // Made only for a recorded stream, so that the page of any other has its one <video>.
    this.rewind = document.createElement('video');
    this.rewind.id = 'rewind';
    this.rewind.playsInline = true;
    this.rewind.disablePictureInPicture = true;
    this.rewind.style.display = 'none';
    /** Wall-clock ms of the cut's time 0, while rewinding; null when live. */
    this.cutStartMs = null;
    /** Seconds the timeline reaches back now. */
    this.windowS = 0;
    this.earliestMs = Infinity;
    this.dragging = false;
    this.cuts = 0;
    this.savedVolume = 1;
    /** @type {string | null} */
    this.error = null;
    this.timer = 0;
  }

  get rewinding() {
    return this.cutStartMs !== null;
  }

  /** Seconds behind live: of the cut being played, or the live player's lag. */
  get behind() {
    if (this.cutStartMs === null) return this.o.lag();
    return (Date.now() - (this.cutStartMs + this.rewind.currentTime * 1000)) / 1000;
  }

  /** Shows the timeline if the stream is recorded. */
  async init() {
    if (!(await this.refresh())) return;
    const { timeline, liveButton, bar } = this.o;
    const rewind = this.rewind;
    this.o.live.after(rewind);
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
    // The cut has played to its end (where "now" was when it was asked for): the next one goes on from there.
    rewind.addEventListener('ended', () => {
      if (this.cutStartMs === null) return;
      void this.seekBack((Date.now() - (this.cutStartMs + rewind.duration * 1000)) / 1000, true);
    });
    this.timer = window.setInterval(() => this.tick(), TICK_MS);
    window.setInterval(() => void this.refresh(), 10_000);
    this.tick();
  }

  /** Reads how far back the recordings go; false when the stream is not recorded. */
  async refresh() {
    try {
      const response = await fetch(this.o.apiUrl, { cache: 'no-store' });
      if (!response.ok) return false;
      const body = await response.json();
      if (!body.dvrWindow || body.recordings.length === 0) return false;
      this.windowS = body.dvrWindow;
      this.earliestMs = Math.min(...body.recordings.map((/** @type {{start: string}} */ r) => Date.parse(r.start)));
      return true;
    } catch {
      return false;
    }
  }

  /** Seconds the timeline can reach back now. */
  reach() {
    return Math.max(0, Math.min(this.windowMaxS(), (Date.now() - this.earliestMs) / 1000));
  }

  windowMaxS() {
    return this.windowS || 1800;
  }

  /**
   * Plays the recordings from `seconds` before now.
   * @param {number} seconds
   * @param {boolean} [continuing] the previous cut ended: go on where it stopped
   */
  async seekBack(seconds, continuing = false) {
    const targetMs = Date.now() - Math.min(seconds, this.reach()) * 1000;
    const url = new URL(this.o.recordingsUrl);
    url.searchParams.set('from', new Date(targetMs).toISOString());
    for (const [key, value] of this.o.credentials) url.searchParams.set(key, value);
    const head = await fetch(url, { method: 'HEAD', cache: 'no-store' }).catch(() => null);
    const start = head?.ok ? Date.parse(head.headers.get('X-Recording-Start') ?? '') : NaN;
    if (!Number.isFinite(start)) {
      this.error = head ? `no recording at that time (${head.status})` : 'the relay cannot be reached';
      if (!continuing) return;
      this.goLive();
      return;
    }
    this.error = null;
    const { live } = this.o;
    const rewind = this.rewind;
    if (this.cutStartMs === null) {
      this.savedVolume = live.volume;
      rewind.muted = live.muted;
      rewind.volume = live.volume;
      live.volume = 0;
    }
    this.cutStartMs = start;
    this.cuts++;
    rewind.src = url.href;
    const offset = Math.max(0, (targetMs - start) / 1000);
    await new Promise((resolve) => rewind.addEventListener('loadedmetadata', resolve, { once: true }));
    if (this.cutStartMs !== start) return;
    if (offset > 0.05) rewind.currentTime = offset;
    rewind.style.display = 'block';
    live.style.display = 'none';
    await rewind.play().catch(() => {});
    this.tick();
  }

  goLive() {
    const { live } = this.o;
    const rewind = this.rewind;
    if (this.cutStartMs !== null) live.volume = this.savedVolume;
    this.cutStartMs = null;
    rewind.pause();
    rewind.removeAttribute('src');
    rewind.load();
    rewind.style.display = 'none';
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
    return { rewinding: this.rewinding, behind: this.behind, reach: this.reach(), cuts: this.cuts, error: this.error, currentTime: this.rewind.currentTime };
  }
}
