import { expect } from 'chai';
import { Pacing } from '../../src/hub/pacing.js';

/** A Pacing on a clock the test moves; timecodes in ms (TimecodeScale 1 ms). */
function pacingOnClock() {
  let now = 1_000_000;
  const pacing = new Pacing(() => now);
  pacing.restart(1e6);
  return {
    pacing,
    /** One send at wall time `at` (ms from the start) holding video frames at these timecodes. */
    send(at: number, ...timecodes: number[]) {
      now = 1_000_000 + at;
      for (const t of timecodes) pacing.videoFrame(t);
      pacing.sent();
    },
    advance(ms: number) {
      now += ms;
    },
  };
}

describe('pacing: how video reaches viewers, as a joining player is told', () => {
  it('an even 25 frames a second with one second in which the encoder stood still 440 ms: three seconds in four were no worse than 40 ms', () => {
    const { pacing, send } = pacingOnClock();
    for (let t = 0; t < 10_000; t += 40) if (t < 5000 || t >= 5400) send(t, t);
    expect(pacing.current).to.deep.equal({ waitMs: 40, frameIntervalMs: 40 });
  });

  it('a producer writing a second of frames at once, at irregular intervals of up to 500 ms', () => {
    const { pacing, send } = pacingOnClock();
    for (let second = 0; second < 10; second++) {
      const base = second * 1000;
      send(base + 1000, base, base + 500, base + 600, base + 700, base + 800, base + 900);
    }
    expect(pacing.current).to.deep.equal({ waitMs: 1000, frameIntervalMs: 500 });
  });

  it('forgets what is older than 20 s, and nothing spans a restart of the producer', () => {
    const { pacing, send, advance } = pacingOnClock();
    send(0, 0);
    send(900, 900);
    expect(pacing.current).to.deep.equal({ waitMs: 900, frameIntervalMs: 900 });
    advance(21_000);
    expect(pacing.current).to.deep.equal({ waitMs: 0, frameIntervalMs: 0 });
    pacing.restart();
    send(30_000, 0);
    send(30_040, 40);
    expect(pacing.current).to.deep.equal({ waitMs: 40, frameIntervalMs: 40 });
  });
});
