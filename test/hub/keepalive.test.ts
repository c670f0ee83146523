import { expect } from 'chai';
import { KeepAlive, type IdleViewer } from '../../src/hub/keepalive.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A viewer whose sent bytes and backlog the test sets, counting keep-alives. */
function viewer(): IdleViewer & { sentBytes: number; keepAlives: number; transport: { keepAlive(): void; pendingBytes: number } } {
  const v = {
    sentBytes: 0,
    keepAlives: 0,
    transport: { pendingBytes: 0, keepAlive: () => v.keepAlives++ },
  };
  return v;
}

describe('hub: keep-alive policy', () => {
  it('sends a keep-alive to a viewer sent nothing for the idle time, about once per idle time; none while media flows or bytes wait', async () => {
    const idle = viewer();
    const flowing = viewer();
    const backlogged = viewer();
    backlogged.transport.pendingBytes = 1000;
    const keepAlive = new KeepAlive(() => [idle, flowing, backlogged], 100);
    const ticker = setInterval(() => (flowing.sentBytes += 100), 20);
    try {
      await sleep(560);
    } finally {
      clearInterval(ticker);
      keepAlive.close();
    }
    // First seen at ~50 ms, idle from then: keep-alives near 150, 250, 350, 450, 550 ms.
    expect(idle.keepAlives).to.be.within(3, 6);
    expect(flowing.keepAlives).to.equal(0);
    expect(backlogged.keepAlives).to.equal(0);
    expect(keepAlive.sent).to.equal(idle.keepAlives);
  });

  it('counts the idle time of a viewer whose media stopped from its last media, not from when it was first seen', async () => {
    const stopping = viewer();
    let firstKeepAliveAt = -1;
    stopping.transport.keepAlive = () => {
      stopping.keepAlives++;
      if (firstKeepAliveAt < 0) firstKeepAliveAt = Date.now();
    };
    const keepAlive = new KeepAlive(() => [stopping], 100);
    const ticker = setInterval(() => (stopping.sentBytes += 100), 20);
    let lastMediaAt = 0;
    try {
      await sleep(400);
      clearInterval(ticker);
      lastMediaAt = Date.now();
      await sleep(400);
    } finally {
      clearInterval(ticker);
      keepAlive.close();
    }
    expect(stopping.keepAlives).to.be.at.least(1);
    // Timers may fire late, never early: the idle time runs from a check that saw the last media.
    expect(firstKeepAliveAt - lastMediaAt, 'ms from the last media to the first keep-alive').to.be.at.least(99);
  });
});
