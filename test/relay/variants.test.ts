/**
 * The other encoder settings a user can pick, run side by side (one relay each,
 * started at once): each must serve a stream that starts at a keyframe, has the codecs
 * asked for, keeps its blocks in order and decodes.
 */
import { expect } from 'chai';
import { HttpViewer, gstChildren } from '../helpers/faults.js';
import { startRelay, trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { backwardsInClusters, decodeErrors, parseStream, shutdown } from '../helpers/viewers.js';

const SMALL = ['--width', '320', '--height', '240', '--video-bitrate', '400'];

const VARIANTS: { name: string; args: string[]; mimeType: string; codecs: string[] }[] = [
  { name: 'VP9 + Opus', args: ['--video-codec', 'vp9'], mimeType: 'video/webm; codecs="vp9,opus"', codecs: ['V_VP9', 'A_OPUS'] },
  { name: 'VP8 + Vorbis', args: ['--audio-codec', 'vorbis'], mimeType: 'video/webm; codecs="vp8,vorbis"', codecs: ['V_VP8', 'A_VORBIS'] },
  { name: 'VP8, no audio', args: ['--audio-source', 'none'], mimeType: 'video/webm; codecs="vp8"', codecs: ['V_VP8'] },
  { name: 'VP8 + Opus, --join next-keyframe', args: ['--join', 'next-keyframe'], mimeType: 'video/webm; codecs="vp8,opus"', codecs: ['V_VP8', 'A_OPUS'] },
];

describe('relay: encoder settings (--video-codec, --audio-codec, --audio-source none, --join)', function () {
  this.timeout(120_000);
  const relays: (RunningRelay | null)[] = VARIANTS.map(() => null);

  before(async function () {
    this.timeout(60_000);
    await Promise.all(
      VARIANTS.map(async (v, i) => {
        relays[i] = await startRelay([...SMALL, ...v.args]);
        await waitLive(relays[i]!, 30_000);
      }),
    );
  });

  after(async () => {
    await Promise.all(relays.map((r) => shutdown(r)));
  });

  VARIANTS.forEach((variant, i) => {
    it(`${variant.name}: a viewer gets the codecs asked for, from a keyframe, in order, decodable`, async () => {
      const relay = relays[i]!;
      expect(gstChildren(relay.process.pid!)).to.have.length(1);
      const viewer = new HttpViewer(`${relay.url}/live.webm`);
      try {
        await waitFor('2 complete clusters', () => parseStream(viewer.body).clusters.filter((c) => c.complete).length >= 2, 30_000);
      } finally {
        viewer.close();
      }
      const parsed = parseStream(viewer.body);
      expect(viewer.status).to.equal(200);
      expect(parsed.errors).to.deep.equal([]);
      expect(parsed.info!.mimeType).to.equal(variant.mimeType);
      expect(parsed.info!.tracks.map((t) => t.codecId)).to.deep.equal(variant.codecs);
      for (const c of parsed.clusters) if (c.blocks.length > 0) expect(c.blocks[0], `cluster ${c.timecode}`).to.include({ video: true, keyframe: true });
      expect(backwardsInClusters(parsed.clusters)).to.deep.equal([]);
      expect(await decodeErrors(trimToCompleteBlocks(viewer.body))).to.deep.equal([]);
    });
  });
});
