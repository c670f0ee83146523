// Player: ties the transport, the buffer controller and the latency controller to one
// <video>, and keeps the figures the page shows (and tests read through window.player).

import { BufferController } from './buffer-controller.js';
import { LatencyController } from './latency-controller.js';
import { SegmentTransport } from './segment-transport.js';
import { CLOSE_NEEDS_CREDENTIALS, CLOSE_TOO_MANY_VIEWERS, LiveTransport } from './transport.js';

/**
 * `denied`: the relay refused the credentials (none, wrong, expired); the player does not try again.
 * @typedef {'connecting' | 'buffering' | 'playing' | 'reconnecting' | 'full' | 'unsupported' | 'denied'} PlayerState
 */

const TICK_MS = 250;

export class Player {
  /**
   * @param {HTMLVideoElement} video
   * @param {{
   *   url: string,
   *   segmentsUrl?: string,
   *   transport?: 'websocket' | 'segments',
   *   onChange?: (player: Player) => void,
   *   latency?: Partial<import('./latency-controller.js').LatencyController['options']>,
   *   buffer?: Partial<import('./buffer-controller.js').BufferController['options']>,
   * }} options
   */
  constructor(video, options) {
    this.video = video;
    this.onChange = options.onChange ?? (() => {});
    /** @type {PlayerState} */
    this.state = 'connecting';
    this.message = 'Connecting to the relay…';
    /** @type {any} the latest {"type":"stream"} description */
    this.description = null;
    this.viewers = /** @type {number | null} */ (null);
    /** Milliseconds from navigation start to the first frame shown (first start only). */
    this.firstFrameMs = /** @type {number | null} */ (null);
    /** Milliseconds from the latest stream description to its first frame (every start). */
    this.startupMs = /** @type {number | null} */ (null);
    this.starts = 0;
    this.mediaErrors = 0;
    /** Times playback ran out of data after it had started. */
    this.stalls = 0;
    this.recentErrors = 0;
    this.lastErrorAt = -Infinity;
    this.awaitingStart = false;
    this.descriptionAt = 0;
    this.userPaused = false;
    /** When the person last clicked, tapped or pressed a key: only then is a pause or an unmute theirs. */
    this.lastGestureAt = -Infinity;
    /** Pauses that did not come from the person (autoplay policy, a seek in WebKit), undone. */
    this.unexpectedPauses = 0;
    /** Unmutes that did not come from the person (WebKit, when playbackRate changes), undone. */
    this.unexpectedUnmutes = 0;
    /** Muted plays the browser refused (NotAllowedError), and when tick() may try again (see play()). */
    this.refusedPlays = 0;
    this.refusalsInARow = 0;
    this.retryPlayAt = 0;
    /** The relay skipped media for a slow link (seen as a hole the playhead jumped): count, and until when the notice shows. */
    this.skips = 0;
    this.seenGapJumps = 0;
    this.seenSkipped = 0;
    this.skipNoticeUntil = 0;
    this.bitrate = new RateMeter();
    /**
     * When the way to the first frame passed each step, in ms since navigation: page script
     * ran, socket open, description, init segment, first media message, first media
     * appended, playback started (seek), first frame shown. Where start-up time goes.
     * @type {Record<string, number>}
     */
    this.timeline = { script: Math.round(performance.now()) };

    this.latency = new LatencyController(video, options.latency);
    this.buffer = new BufferController(video, {
      onError: (message) => this.recover(message),
      onAppended: () => {
        this.latency.appended();
        if (this.video.buffered.length > 0) this.mark('appended');
        this.maybeStart();
      },
    }, options.buffer);
    /** @type {ConstructorParameters<typeof LiveTransport>[1]} */
    const handlers = {
      onOpen: () => {
        this.mark('open');
        if (this.state === 'reconnecting' || this.state === 'full') this.setState(this.state, 'Connected, waiting for the stream…');
      },
      onStream: (description) => this.onStream(description),
      onInit: (bytes) => {
        this.mark('init');
        this.buffer.append(bytes);
      },
      onMedia: (bytes) => {
        this.mark('media');
        this.bitrate.add(bytes.byteLength);
        this.buffer.append(bytes);
      },
      onPong: (message) => {
        if (typeof message.viewers === 'number') this.viewers = message.viewers;
        this.latency.told(message.pacing);
      },
      onClose: ({ code, reason, retryInMs }) => {
        const seconds = (retryInMs / 1000).toFixed(1);
        if (this.transport instanceof SegmentTransport) {
          this.setState('reconnecting', `Segments: ${reason}; trying again in ${seconds} s…`);
        } else if (this.transport.opened === 0 && this.transport.failures >= 2 && options.segmentsUrl) {
          // The WebSocket never connected (a proxy that drops Upgrade): plain HTTP segments instead.
          // After this callback, so that stopping also cancels the retry it is about to schedule.
          const failed = this.transport;
          setTimeout(() => {
            failed.stop();
            this.transport = new SegmentTransport(/** @type {string} */ (options.segmentsUrl), handlers);
            this.transport.start();
          }, 0);
          this.setState('reconnecting', 'The WebSocket cannot connect; switching to HTTP segments…');
        } else if (code === CLOSE_TOO_MANY_VIEWERS) this.setState('full', `The relay has too many viewers; trying again in ${seconds} s.`);
        else this.setState('reconnecting', `Lost the connection to the relay; reconnecting in ${seconds} s…`);
      },
      onRefused: ({ code, reason }) => {
        // 4401 (401): no credentials came; 4403 (403): wrong, or the link has expired (the relay's text says which).
        const why = reason ? ` (${reason.replace(/^(index\.json|segment \S+): /, '')})` : '';
        this.setState(
          'denied',
          code === CLOSE_NEEDS_CREDENTIALS
            ? 'This stream needs a token or a signed link: open the link you were given.'
            : `The relay refused this link${why}. Ask whoever gave it to you for a new one.`,
        );
      },
    };
    /** @type {LiveTransport | SegmentTransport} */
    this.transport =
      options.transport === 'segments' && options.segmentsUrl
        ? new SegmentTransport(options.segmentsUrl, handlers)
        : new LiveTransport(options.url, handlers);

    video.muted = true;
    video.addEventListener('error', () => this.recover(`media error ${video.error?.code ?? ''}: ${video.error?.message ?? ''}`));
    video.addEventListener('waiting', () => {
      if (this.state === 'playing') {
        this.stalls++;
        this.latency.stalled();
      }
      this.latency.tick();
    });
    for (const type of ['pointerdown', 'keydown', 'click']) {
      document.addEventListener(type, () => (this.lastGestureAt = performance.now()), { capture: true });
    }
    video.addEventListener('pause', () => {
      if (this.state !== 'playing' || this.awaitingStart) return;
      // The person's pause (a click, a key, the controls) is respected until they play again.
      // Any other (WebKit's autoplay policy after an unmute, a seek) is undone by tick().
      if (this.fromPerson()) this.userPaused = true;
      else this.unexpectedPauses++;
    });
    video.addEventListener('volumechange', () => {
      if (this.fromPerson()) this.latency.wantMuted = video.muted;
      else if (!video.muted && this.latency.wantMuted) {
        // Unmuted by the browser, not the person: unmuted video may not autoplay, so mute again.
        this.unexpectedUnmutes++;
        video.muted = true;
      }
    });
    video.addEventListener('play', () => (this.userPaused = false));
    document.addEventListener('visibilitychange', () => {
      this.latency.visibilityChanged();
      if (document.visibilityState === 'visible') this.latency.tick();
    });
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  /** @param {any} [early] a WebSocket the page opened already (see index.html) */
  start(early) {
    if (typeof MediaSource === 'undefined') {
      early?.socket.close();
      this.setState('unsupported', 'This browser has no Media Source Extensions, so it cannot play the live stream here. Try the plain video page.');
      return;
    }
    // When this viewer began to connect (the page's early socket, or now): where a start-up wait begins.
    this.timeline.connect = Math.round(early?.at ?? performance.now());
    // Open a MediaSource while the socket connects: one step less before the first frame.
    void this.buffer.attach();
    this.transport.start(early);
  }

  stop() {
    clearInterval(this.timer);
    this.transport.stop();
  }

  get reconnects() {
    return this.transport.reconnects;
  }

  get lag() {
    return this.latency.lag;
  }

  /** @param {any} description */
  onStream(description) {
    this.description = description;
    if (!MediaSource.isTypeSupported(description.mimeType)) {
      this.transport.stop();
      this.setState('unsupported', `This browser cannot play this stream (${description.mimeType}). Try another browser, or the plain video page.`);
      return;
    }
    this.descriptionAt = performance.now();
    this.latency.told(description.pacing);
    // A new start: keep only what happened before the stream was described.
    this.timeline = { script: this.timeline.script, connect: this.timeline.connect, open: this.timeline.open };
    this.mark('stream');
    this.awaitingStart = true;
    this.setState('buffering', 'Waiting for the first picture…');
    this.buffer.setup(description.mimeType).catch((error) => this.recover(`cannot set up the stream: ${error.message ?? error}`));
  }

  /** After each append: start as soon as the first keyframe is in `buffered`. */
  maybeStart() {
    if (!this.awaitingStart) return;
    // The relay sends the GOP so far in one burst: take all of it first, then start near its end.
    if (this.buffer.queue && this.buffer.queue.length > 0) return;
    const position = this.latency.startPosition();
    if (position === null) return;
    this.awaitingStart = false;
    this.starts++;
    this.latency.probeRate();
    this.video.currentTime = position;
    this.mark('start');
    this.latency.started();
    this.play();
    const start = this.starts;
    const onFrame = (/** @type {number} */ now, /** @type {any} */ metadata) => {
      if (start === this.starts && this.state === 'buffering') this.firstFrame(metadata?.presentationTime ?? now);
    };
    if ('requestVideoFrameCallback' in this.video) this.video.requestVideoFrameCallback(onFrame);
    // WebKit sometimes calls no frame callback after a new MediaSource: the clock moving
    // on from the start position says the picture does too.
    const video = this.video;
    const onTime = () => {
      if (start !== this.starts || this.state !== 'buffering') video.removeEventListener('timeupdate', onTime);
      else if (video.currentTime > position + 0.1) {
        video.removeEventListener('timeupdate', onTime);
        onFrame(performance.now(), null);
      }
    };
    video.addEventListener('timeupdate', onTime);
  }

  /** @param {number} at a performance.now() time */
  firstFrame(at) {
    if (this.firstFrameMs === null) this.firstFrameMs = Math.round(at);
    this.startupMs = Math.round(at - this.descriptionAt);
    this.timeline.frame = Math.round(at);
    this.setState('playing', '');
  }

  /** A person clicked, tapped or pressed a key within the last second. */
  fromPerson() {
    return performance.now() - this.lastGestureAt < 1000;
  }

  play() {
    this.userPaused = false;
    if (!this.video.muted && this.latency.wantMuted) this.video.muted = true;
    if (this.state === 'playing' && this.message !== '') this.setState('playing', '');
    // After a pause: live is where the stream is now, not where the picture stopped.
    if (this.state === 'playing') this.latency.tick();
    this.video.play().then(
      () => {
        this.refusalsInARow = 0;
        this.retryPlayAt = 0;
      },
      (error) => {
        if (error.name !== 'NotAllowedError') return;
        this.setState(this.state, 'The browser did not let the video start by itself: press Play.');
        if (!this.video.muted) {
          // Sound needs the person's gesture: wait for them, no retrying from tick().
          this.userPaused = true;
          return;
        }
        // Muted video may autoplay, yet WebKit now and then refuses it for a while after a seek
        // (a player left waiting for Play after an encoder restart): try again, less and less often.
        this.refusedPlays++;
        this.retryPlayAt = performance.now() + Math.min(8000, 500 * 2 ** this.refusalsInARow++);
      },
    );
  }

  /** @param {string} why */
  recover(why) {
    if (this.state === 'unsupported' || this.state === 'denied') return;
    this.mediaErrors++;
    const now = performance.now();
    this.recentErrors = now - this.lastErrorAt < 30_000 ? this.recentErrors + 1 : 1;
    this.lastErrorAt = now;
    console.warn(`player: ${why}; starting over`);
    this.setState('reconnecting', `Playback failed (${why}); starting over…`);
    // A new connection brings a new description and init segment, and with them a new MediaSource.
    // At once the first time; an error that keeps coming back waits longer each time.
    this.transport.restart(this.recentErrors > 1 ? Math.min(10_000, 500 * 2 ** (this.recentErrors - 2)) : 0);
  }

  tick() {
    // 'buffering' too once the start is made: a start whose first frame never comes
    // (WebKit, now and then, after a new MediaSource) is kicked by the latency
    // controller like any stuck playhead, instead of waiting forever.
    if (this.state !== 'playing' && this.state !== 'reconnecting' && this.state !== 'buffering') return;
    if (this.awaitingStart) return;
    this.buffer.evictBehind();
    // Paused by the person: the picture stays; play() goes back to the live edge.
    if (this.video.paused && this.userPaused) return;
    this.latency.tick();
    this.noticeSkips();
    if (this.video.paused && this.video.buffered.length > 0 && performance.now() >= this.retryPlayAt) this.play();
    this.onChange(this);
  }

  /**
   * A hole the playhead jumped over after the start is media the relay skipped (it drops
   * whole GOPs for a viewer whose link is slower than the stream): say so for a while.
   */
  noticeSkips() {
    const latency = this.latency;
    if (latency.gapJumps === this.seenGapJumps) {
      if (this.skipNoticeUntil && performance.now() > this.skipNoticeUntil) {
        this.skipNoticeUntil = 0;
        if (this.state === 'playing') this.setState('playing', '');
      }
      return;
    }
    const skipped = latency.skippedSeconds - this.seenSkipped;
    this.seenGapJumps = latency.gapJumps;
    this.seenSkipped = latency.skippedSeconds;
    if (skipped < 0.2 || this.state !== 'playing') return;
    this.skips++;
    this.skipNoticeUntil = performance.now() + 5000;
    this.setState('playing', `Skipped ${skipped.toFixed(1)} s to stay live: the connection is slower than the stream.`);
  }

  /** Notes the first time a step was reached since the latest description. @param {string} step */
  mark(step) {
    if (!(step in this.timeline)) this.timeline[step] = Math.round(performance.now());
  }

  /** @param {PlayerState} state @param {string} message */
  setState(state, message) {
    this.state = state;
    this.message = message;
    this.onChange(this);
  }

  /** Everything the overlay shows, as plain data (also for tests). */
  snapshot() {
    const video = this.video;
    const quality = typeof video.getVideoPlaybackQuality === 'function' ? video.getVideoPlaybackQuality() : null;
    const tracks = this.description?.tracks ?? [];
    const ranges = video.buffered;
    return {
      state: this.state,
      message: this.message,
      mimeType: this.description?.mimeType ?? null,
      codecs: tracks.map((/** @type {any} */ t) => t.codec).join(', '),
      width: video.videoWidth,
      height: video.videoHeight,
      bitrate: this.bitrate.perSecond() * 8,
      lag: this.latency.lag,
      targetLatency: this.latency.target,
      /** Media the player keeps ahead of the playhead when new media arrives (see LatencyController.lead). */
      lead: this.latency.lead,
      latencyMode: this.latency.mode,
      latencyModeReason: this.latency.modeReason,
      catchUpSeeks: this.latency.catchUpSeeks,
      skips: this.skips,
      skippedSeconds: this.latency.skippedSeconds,
      unexpectedPauses: this.unexpectedPauses,
      unexpectedUnmutes: this.unexpectedUnmutes,
      refusedPlays: this.refusedPlays,
      currentTime: video.currentTime,
      playbackRate: video.playbackRate,
      bufferedSeconds: this.buffer.bufferedSeconds(),
      bufferedRanges: ranges.length,
      decodedFrames: quality?.totalVideoFrames ?? 0,
      droppedFrames: quality?.droppedVideoFrames ?? 0,
      reconnects: this.transport.reconnects,
      retries: this.transport.retries,
      transport: this.transport instanceof SegmentTransport ? 'segments' : 'websocket',
      /** The segment being read (segments transport), else null. */
      segment: this.transport instanceof SegmentTransport ? this.transport.segment : null,
      viewers: this.viewers,
      firstFrameMs: this.firstFrameMs,
      startupMs: this.startupMs,
      starts: this.starts,
      jumps: this.latency.jumps,
      gapJumps: this.latency.gapJumps,
      evictions: this.buffer.evictions,
      quotaErrors: this.buffer.quotaErrors,
      mediaErrors: this.mediaErrors,
      stalls: this.stalls,
      muted: video.muted,
      timeline: { ...this.timeline },
    };
  }
}

/** Bytes per second over the last few seconds (0 until a second has been seen). */
class RateMeter {
  constructor(windowMs = 3000) {
    this.windowMs = windowMs;
    /** @type {[number, number][]} [time, bytes] */
    this.samples = [];
    this.since = -1;
  }

  /** @param {number} bytes */
  add(bytes) {
    const now = performance.now();
    if (this.since < 0) this.since = now;
    this.samples.push([now, bytes]);
    this.trim(now);
  }

  perSecond() {
    const now = performance.now();
    this.trim(now);
    const span = Math.min(this.windowMs, now - this.since);
    if (this.since < 0 || span < 1000) return 0;
    let sum = 0;
    for (const [, bytes] of this.samples) sum += bytes;
    return (sum * 1000) / span;
  }

  /** @param {number} now */
  trim(now) {
    let drop = 0;
    while (drop < this.samples.length && now - this.samples[drop][0] > this.windowMs) drop++;
    if (drop > 0) this.samples.splice(0, drop);
  }
}
