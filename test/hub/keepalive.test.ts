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
});
