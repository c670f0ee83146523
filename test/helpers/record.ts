import { spawn } from 'node:child_process';
import net from 'node:net';
import type { EncoderSettings } from '../../src/config/options.js';
import { encoderArgs } from '../../src/source/gst-args.js';

export const DEFAULT_ENCODER: EncoderSettings = {
  videoSource: 'videotestsrc is-live=true pattern=smpte horizontal-speed=4',
  audioSource: 'audiotestsrc is-live=true wave=sine freq=440',
  width: 320,
  height: 240,
  framerate: 30,
  videoBitrateKbps: 500,
  audioBitrateKbps: 64,
  keyframeIntervalS: 1,
  videoCodec: 'vp8',
  audioCodec: 'opus',
};

/**
 * Records what the relay's own encoder pipeline sends, `seconds` long: the same
 * gst-launch-1.0 argument vector, with live sources that stop after that many
 * seconds (it takes that long: the pipeline's leaky queues drop what a live
 * encoder could not keep up with, so faster-than-real-time sources would lose frames).
 */
export async function recordEncoder(seconds: number, settings: Partial<EncoderSettings> = {}): Promise<Buffer> {
  const s = { ...DEFAULT_ENCODER, ...settings };
  const videoFrames = Math.round(seconds * s.framerate);
  // audiotestsrc's default buffers hold 1024 samples at 44.1 kHz.
  const audioBuffers = Math.round((seconds * 44100) / 1024);
  const limited = {
    ...s,
    videoSource: `${s.videoSource} num-buffers=${videoFrames}`,
    audioSource: s.audioSource ? `${s.audioSource} num-buffers=${audioBuffers}` : null,
  };
  const chunks: Buffer[] = [];
  const server = net.createServer((socket) => socket.on('data', (chunk: Buffer) => chunks.push(chunk)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const gst = spawn('gst-launch-1.0', encoderArgs(limited, port), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    gst.stderr.on('data', (text) => (stderr += text));
    const code = await new Promise<number | null>((resolve) => gst.once('exit', resolve));
    if (code !== 0) throw new Error(`gst-launch-1.0 exited with ${code}: ${stderr}`);
    // The socket's last bytes may still be in flight when gst-launch exits.
    await new Promise((r) => setTimeout(r, 100));
  } finally {
    server.close();
  }
  return Buffer.concat(chunks);
}
