/**
 * The players operators point at /live.webm besides browsers: mpv, VLC and a GStreamer
 * pipeline (souphttpsrc ! matroskademux), all three at once for 20 s.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { startRelay, waitLive, type RunningRelay } from '../helpers/relay.js';
import { shutdown } from '../helpers/viewers.js';
import { TimedViewer } from './harness.js';

const SECONDS = 20;
/** The encoder's track numbers: video 1, audio 2. */
const AUDIO_TRACK = 2;
const VIDEO_TRACK = 1;

/** Jumps of more than `overMs` between consecutive timestamps of one track, as "from->to" (ms). */
function timestampGaps(viewer: TimedViewer, track: number, overMs: number): string[] {
  const times = [...viewer.arrivals.keys()]
    .map((key) => key.split(':').map(Number))
    .filter(([t]) => t === track)
    .map(([, timecode]) => timecode)
    .sort((a, b) => a - b);
  const gaps: string[] = [];
  for (let i = 1; i < times.length; i++) if (times[i] - times[i - 1] > overMs) gaps.push(`${times[i - 1]}->${times[i]}`);
  return gaps;
}

interface Run {
  code: number | null;
  output: string;
  wallMs: number;
}

function run(command: string, args: string[], stopAfterMs: number | null, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const startedAt = Date.now();
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (t: string) => (output += t));
  child.stderr.on('data', (t: string) => (output += t));
  const stop = stopAfterMs === null ? null : setTimeout(() => child.kill('SIGINT'), stopAfterMs);
  const kill = setTimeout(() => child.kill('SIGKILL'), (stopAfterMs ?? SECONDS * 1000) + 20_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      if (stop) clearTimeout(stop);
      clearTimeout(kill);
      resolve({ code, output, wallMs: Date.now() - startedAt });
    }),
  );
}

/** VLC refuses to run as root; as root it runs as nobody. */
function vlcCommand(args: string[]): [string, string[]] {
  if (process.getuid?.() !== 0) return ['cvlc', args];
  return ['setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'cvlc', ...args]];
}

describe(`proxies: mpv, VLC and GStreamer play /live.webm for ${SECONDS} s (about 25 s)`, function () {
  this.timeout(90_000);
  let relay: RunningRelay | null = null;

  before(async () => {
    relay = await startRelay(['--width', '320', '--height', '240', '--video-bitrate', '500']);
    await waitLive(relay, 20_000);
  });

  after(() => shutdown(relay));

  it('each decodes video and audio for the whole time, with no errors and no dropped frames', async () => {
    const url = `${relay!.url}/live.webm`;
    // What the relay sent, to tell a player's complaint about the stream from one about the relay.
    const witness = new TimedViewer(url);
    const playersStartedAt = Date.now();
    const [mpv, vlc, gst] = await Promise.all([
      run('mpv', ['--no-config', '--vo=null', '--ao=null', `--length=${SECONDS}`, '--quiet', url], null),
      run(...vlcCommand(['-I', 'dummy', '--vout', 'dummy', '--aout', 'dummy', '--no-stats', '--play-and-exit', '--run-time', String(SECONDS), '-vv', url]), null, { HOME: '/tmp' }),
      run(
        'gst-launch-1.0',
        ['-e', '-v', 'souphttpsrc', `location=${url}`, 'is-live=true', '!', 'matroskademux', 'name=d',
          'd.video_0', '!', 'queue', '!', 'vp8dec', '!', 'fpsdisplaysink', 'video-sink=fakesink', 'text-overlay=false', 'sync=true',
          'd.audio_0', '!', 'queue', '!', 'opusdec', '!', 'fakesink', 'sync=true'],
        SECONDS * 1000,
      ),
    ]);

    witness.stop();
    const audioGaps = timestampGaps(witness, AUDIO_TRACK, 60);
    const stats = (await (await fetch(`${relay!.url}/api/stats`)).json()) as { skips: number; normalizer: unknown; encoderRestarts: number };
    console.log(`      relay: ${stats.skips} slow-viewer skips, ${stats.encoderRestarts} encoder restarts, normalizer ${JSON.stringify(stats.normalizer)}; holes in the audio timestamps it sent: ${JSON.stringify(audioGaps)}`);
    // mpv: plays 20 s of the stream, in real time, and ends cleanly.
    // mpv's paragraph on A/V desync (a starved CPU, here) is about the machine, not the stream: counted, not failed.
    const desync = /Audio\/Video desynchronisation detected![\s\S]*?(\n\s*\n|$)/g;
    const desyncs = (mpv.output.match(desync) ?? []).length;
    const mpvProblems = mpv.output.replace(desync, '').split('\n').filter((l) => /error|invalid|broken|corrupt/i.test(l));
    console.log(`      mpv: exit ${mpv.code} after ${mpv.wallMs} ms; A/V desync reports ${desyncs}; problems: ${JSON.stringify(mpvProblems)}`);
    expect(mpv.code, mpv.output).to.equal(0);
    expect(mpv.output).to.include('(End of file)');
    expect(mpv.wallMs).to.be.within((SECONDS - 2) * 1000, (SECONDS + 20) * 1000);
    expect(mpv.output).to.match(/Video --vid=1 .*vp8/).and.to.match(/Audio --aid=1 .*opus/);
    const keyframeWarning = mpvProblems.filter((l) => /incorrect keyframe flag/.test(l));
    // On a loaded machine the encoder's live audio source skips (its timestamps jump); mpv
    // says so. Such a jump must be in what the relay received, not made by it.
    const ptsJumps = mpvProblems.filter((l) => /Invalid audio PTS/.test(l));
    expect(ptsJumps.length, 'mpv audio PTS jumps not in the stream itself').to.be.at.most(audioGaps.length);
    expect(mpvProblems.filter((l) => !keyframeWarning.includes(l) && !ptsJumps.includes(l)), 'mpv errors other than the keyframe flag').to.deep.equal([]);
    // mpv's "incorrect keyframe flag" warning is about audio blocks without the flag: it
    // must come exactly when the relay sent such blocks. (Every Opus frame is a keyframe;
    // the normalizer is to set the flag: until it does, the warning is reported here.)
    console.log(`      audio blocks the relay sent: ${witness.audioBlocks}, ${witness.audioBlocksWithoutKeyframeFlag} without the keyframe flag; mpv's warning: ${keyframeWarning.length > 0}`);
    expect(witness.audioBlocks).to.be.greaterThan(0);
    expect(keyframeWarning.length > 0, 'mpv warns about keyframe flags exactly when audio blocks lack them').to.equal(witness.audioBlocksWithoutKeyframeFlag > 0);

    // VLC: its own Matroska reader wants a seekable file ("cannot find any cluster"), for
    // any live WebM; it hands the stream to libavformat, which plays it.
    const vlcLines = vlc.output.split('\n').map((l) => l.replace(/^\[[0-9a-f]+\] /, ''));
    const vlcErrors = vlcLines.filter((l) => / error: /.test(l) && !/interface|dbus|D-Bus|cannot find any cluster or chapter/.test(l));
    // (Probing other formats first, VLC's MPEG-TS reader says it "lost sync": not about this stream.)
    const lateOrLost = vlcLines.filter((l) => /lost|too late|discontinuity/i.test(l) && !/TS module discarded/.test(l));
    console.log(`      vlc: exit ${vlc.code} after ${vlc.wallMs} ms; errors: ${JSON.stringify(vlcErrors)}; late or lost: ${lateOrLost.length}`);
    expect(vlc.code, vlc.output.slice(-3000)).to.equal(0);
    expect(vlc.wallMs).to.be.within((SECONDS - 2) * 1000, (SECONDS + 20) * 1000);
    expect(vlcLines.some((l) => /codec \(vp8\) started/.test(l)), 'VLC decodes VP8').to.equal(true);
    expect(vlcLines.some((l) => /using audio decoder module "opus"/.test(l)), 'VLC decodes Opus').to.equal(true);
    // VLC's clock stalls its decoder over holes in the audio (and, over long ones, cannot
    // place the next timestamps): allowed only when the stream itself had such holes.
    const clockTrouble = /buffer deadlock prevented|Timestamp conversion failed|Could not convert timestamp/;
    expect(vlcErrors.filter((l) => !(audioGaps.length > 0 && clockTrouble.test(l)))).to.deep.equal([]);
    // A picture decoded too late for its time is the CPU's doing; a lost one is the stream's.
    expect(lateOrLost.filter((l) => !/too late/i.test(l))).to.deep.equal([]);

    // GStreamer: every decoded frame rendered on time, none dropped.
    const fps = [...gst.output.matchAll(/rendered: (\d+), dropped: (\d+)/g)].pop();
    const gstProblems = gst.output.split('\n').filter((l) => /^(WARNING|ERROR)/.test(l));
    console.log(`      gst-launch-1.0: exit ${gst.code} after ${gst.wallMs} ms; ${fps ? `${fps[1]} frames rendered, ${fps[2]} dropped` : 'no frame counts'}; warnings: ${JSON.stringify(gstProblems)}`);
    expect(gst.code, gst.output.slice(-3000)).to.equal(0);
    expect(gstProblems).to.deep.equal([]);
    expect(fps, 'fpsdisplaysink counts').to.not.equal(undefined);
    // The encoder shares two cores with three decoders (and, in a full run, other tests) and
    // skips frames under load: the stream has fewer than 30 a second. What the relay sent
    // while GStreamer played must be shown, less its start (it joins about a second later).
    const videoSent = [...witness.arrivals].filter(([key, at]) => key.startsWith(`${VIDEO_TRACK}:`) && at >= playersStartedAt && at <= playersStartedAt + gst.wallMs).length;
    console.log(`      video frames the relay sent a direct viewer in the same time: ${videoSent}`);
    expect(Number(fps![1]), 'frames rendered').to.be.at.least(videoSent * 0.8);
    expect(Number(fps![1]), 'frames rendered').to.be.at.least(SECONDS * 2);
    // Frames the sink drops for lateness: none on an idle machine; a few when other tests load both cores.
    expect(Number(fps![2]), 'frames dropped').to.be.at.most(Number(fps![1]) * 0.02);
  });
});
