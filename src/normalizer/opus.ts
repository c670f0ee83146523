/**
 * How long an Opus packet lasts, from its TOC byte (RFC 6716, section 3.1): the frame size
 * its configuration number names, times the number of frames the packet holds.
 */

/** Samples at 48 kHz of one frame, by configuration number (the TOC byte's top five bits). */
const FRAME_SAMPLES: readonly number[] = [
  // SILK-only: 10, 20, 40, 60 ms
  480, 960, 1920, 2880, 480, 960, 1920, 2880, 480, 960, 1920, 2880,
  // Hybrid: 10, 20 ms
  480, 960, 480, 960,
  // CELT-only: 2.5, 5, 10, 20 ms
  120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480, 960,
];

/** A packet holds at most 120 ms. */
const MAX_PACKET_SAMPLES = 5760;

/**
 * Samples at 48 kHz in the packet whose first bytes are `toc` and `second` (`second`:
 * undefined when the packet has one byte), or null for a packet that is not valid Opus.
 */
export function opusPacketSamples(toc: number, second: number | undefined): number | null {
  const frame = FRAME_SAMPLES[toc >> 3];
  let frames: number;
  switch (toc & 3) {
    case 0:
      frames = 1;
      break;
    case 1:
    case 2:
      frames = 2;
      break;
    default:
      // Code 3: the frame count is in the next byte.
      if (second === undefined) return null;
      frames = second & 0x3f;
  }
  const samples = frame * frames;
  return samples > 0 && samples <= MAX_PACKET_SAMPLES ? samples : null;
}

/** CELT-only fullband configurations by frame length, longest first: 20, 10, 5 and 2.5 ms. */
const SILENCE_FRAMES: readonly { config: number; samples: number }[] = [
  { config: 31, samples: 960 },
  { config: 30, samples: 480 },
  { config: 29, samples: 240 },
  { config: 28, samples: 120 },
];

/**
 * Opus packets of silence that together last at most `samples` (48 kHz), as few as
 * possible, and within 2.5 ms of it. Each is a TOC byte and the two bytes 0xFF 0xFE,
 * whose first range-coded symbol is CELT's silence flag: a decoder outputs zeros
 * for the frame's length whatever its size (RFC 6716, 4.3: the flag is read before
 * anything that depends on the frame size).
 */
export function opusSilence(samples: number, stereo: boolean): { packet: Buffer; samples: number }[] {
  const out: { packet: Buffer; samples: number }[] = [];
  let left = samples;
  for (const frame of SILENCE_FRAMES) {
    while (left >= frame.samples) {
      out.push({ packet: Buffer.from([(frame.config << 3) | (stereo ? 4 : 0), 0xff, 0xfe]), samples: frame.samples });
      left -= frame.samples;
    }
  }
  return out;
}
