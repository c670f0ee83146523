// The stats overlay: what a person asks when the picture looks wrong.

/** @param {number} bits */
function formatBitrate(bits) {
  if (bits <= 0) return '–';
  if (bits >= 1e6) return `${(bits / 1e6).toFixed(2)} Mbit/s`;
  return `${Math.round(bits / 1e3)} kbit/s`;
}

/** @param {number | null} ms */
function formatMs(ms) {
  return ms === null ? '–' : `${ms} ms`;
}

export class StatsOverlay {
  /** @param {HTMLElement} element @param {import('./player.js').Player} player */
  constructor(element, player) {
    this.element = element;
    this.player = player;
    this.timer = 0;
    /** @type {import('./dvr.js').Rewind | null} the timeline, when the stream is recorded */
    this.rewind = null;
  }

  get visible() {
    return !this.element.hidden;
  }

  /** @param {boolean} [show] */
  toggle(show = !this.visible) {
    this.element.hidden = !show;
    clearInterval(this.timer);
    if (show) {
      this.render();
      this.timer = setInterval(() => this.render(), 500);
    }
    return show;
  }

  render() {
    const s = this.player.snapshot();
    /** @type {[string, string][]} */
    const rows = [
      ['state', s.state],
      ['resolution', s.width > 0 ? `${s.width}×${s.height}` : '–'],
      ['codecs', s.codecs || '–'],
      ['bitrate', formatBitrate(s.bitrate)],
      ['behind live', this.rewind?.rewinding ? `${this.rewind.behind.toFixed(1)} s (rewound)` : `${s.lag.toFixed(2)} s${s.playbackRate !== 1 ? ` (catching up ×${s.playbackRate.toFixed(2)})` : ''}`],
      ['target', `${s.targetLatency.toFixed(2)} s (lead ${s.lead.toFixed(2)} s)${s.latencyMode === 'seek' ? `, catching up by seeking (${s.catchUpSeeks})` : ''}`],
      ['buffered', `${s.bufferedSeconds.toFixed(1)} s${s.bufferedRanges > 1 ? ` in ${s.bufferedRanges} ranges` : ''}`],
      ['frames', `${s.decodedFrames} decoded, ${s.droppedFrames} dropped`],
      ['stalls', `${s.stalls}${s.jumps + s.gapJumps > 0 ? `, ${s.jumps + s.gapJumps} jumps to live` : ''}`],
      ['skipped', s.skips > 0 ? `${s.skips} times, ${s.skippedSeconds.toFixed(1)} s (slow connection)` : '–'],
      ['first frame', formatMs(s.firstFrameMs)],
      ['transport', s.segment === null ? s.transport : `${s.transport}, segment ${s.segment}`],
      ['reconnects', `${s.reconnects}${s.retries > s.reconnects ? ` (${s.retries} attempts)` : ''}`],
      ['viewers', s.viewers === null ? '–' : String(s.viewers)],
    ];
    const table = document.createElement('table');
    for (const [name, value] of rows) {
      const tr = table.insertRow();
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = name;
      tr.append(th);
      tr.insertCell().textContent = value;
    }
    this.element.replaceChildren(table);
  }
}
