import type { Normalizer } from '../../src/normalizer/normalizer.js';
import { WebmSplitter, type WebmBlock } from '../../src/webm/splitter.js';

/**
 * Feeds one producer's bytes through the relay's splitter into `normalizer`, in pieces
 * the size of socket reads, as the relay gets them; the normalizer is flushed at the end.
 * `onBlock` sees each block before the normalizer does.
 */
export function feedNormalizer(normalizer: Normalizer, bytes: Buffer, onBlock?: (block: WebmBlock) => void): void {
  const splitter = new WebmSplitter({
    header: (h) => normalizer.header(h),
    cluster: () => {},
    block: (b) => {
      onBlock?.(b);
      normalizer.block(b);
    },
    end: () => normalizer.flush(),
    error: (e) => {
      throw e;
    },
  });
  for (let i = 0; i < bytes.length; i += 1400) splitter.feed(bytes.subarray(i, i + 1400));
  splitter.end();
}
