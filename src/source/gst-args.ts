import { sourceTokens, type EncoderSettings } from '../config/options.js';

export type { EncoderSettings };

/**
 * The gst-launch-1.0 argument vector that encodes the sources into live WebM and
 * sends it to the relay's ingest port. Built from validated values only, and passed
 * to spawn() as an array: no shell ever sees it.
 */
export function encoderArgs(settings: EncoderSettings, ingestPort: number): string[] {
  const keyframeDistance = Math.max(1, Math.round(settings.framerate * settings.keyframeIntervalS));
  // vp8enc/vp9enc defaults (1 s per frame deadline, 128-frame GOP, 256 kbit/s) suit files, not live.
  const videoEncoder = [
    `${settings.videoCodec}enc`,
    'deadline=1',
    'cpu-used=8',
    'lag-in-frames=0',
    'end-usage=cbr',
    `target-bitrate=${settings.videoBitrateKbps * 1000}`,
    `keyframe-max-dist=${keyframeDistance}`,
    'threads=2',
    ...(settings.videoCodec === 'vp9' ? ['row-mt=true'] : []),
  ];
  const args = [
    '-e',
    ...sourceTokens('--video-source', settings.videoSource),
    '!', 'videoconvert', '!', 'videoscale', '!', 'videorate',
    '!', `video/x-raw,width=${settings.width},height=${settings.height},framerate=${settings.framerate}/1`,
    '!', 'queue', 'max-size-buffers=2', 'leaky=downstream',
    '!', ...videoEncoder,
    '!', 'queue',
    '!', 'webmmux', 'name=mux', 'streamable=true',
    '!', 'tcpclientsink', 'host=127.0.0.1', `port=${ingestPort}`, 'sync=false',
  ];
  if (settings.audioSource) {
    const audioEncoder =
      settings.audioCodec === 'opus'
        ? ['opusenc', `bitrate=${settings.audioBitrateKbps * 1000}`]
        : ['vorbisenc', `bitrate=${settings.audioBitrateKbps * 1000}`];
    args.push(
      ...sourceTokens('--audio-source', settings.audioSource),
      '!', 'audioconvert', '!', 'audioresample',
      '!', 'queue', 'max-size-time=200000000', 'leaky=downstream',
      // What the leaky queue dropped on a busy machine comes back as silence: a gap in the
      // audio track would be a hole in every browser's `buffered`, a stall.
      '!', 'audiorate', 'skip-to-first=true', 'tolerance=10000000',
      '!', ...audioEncoder,
      '!', 'queue',
      '!', 'mux.',
    );
  }
  return args;
}

/** Debian/Ubuntu packages that ship the elements the relay uses or users commonly name. */
const ELEMENT_PACKAGES: Record<string, string> = {
  videotestsrc: 'gstreamer1.0-plugins-base',
  audiotestsrc: 'gstreamer1.0-plugins-base',
  videoconvert: 'gstreamer1.0-plugins-base',
  videoscale: 'gstreamer1.0-plugins-base',
  videorate: 'gstreamer1.0-plugins-base',
  audioconvert: 'gstreamer1.0-plugins-base',
  audioresample: 'gstreamer1.0-plugins-base',
  opusenc: 'gstreamer1.0-plugins-base',
  vorbisenc: 'gstreamer1.0-plugins-base',
  ximagesrc: 'gstreamer1.0-plugins-good',
  alsasrc: 'gstreamer1.0-alsa',
  vp8enc: 'gstreamer1.0-plugins-good',
  vp9enc: 'gstreamer1.0-plugins-good',
  webmmux: 'gstreamer1.0-plugins-good',
  tcpclientsink: 'gstreamer1.0-plugins-base',
  v4l2src: 'gstreamer1.0-plugins-good',
  pulsesrc: 'gstreamer1.0-pulseaudio',
  av1enc: 'gstreamer1.0-plugins-bad',
};

/**
 * Reads gst-launch's stderr for a failure that restarting cannot fix, and says what to do.
 */
export function diagnoseFatal(stderr: string): string | null {
  const missing = /no element "([^"]+)"/.exec(stderr);
  if (missing) {
    const pkg = ELEMENT_PACKAGES[missing[1]];
    return `GStreamer has no element "${missing[1]}"${pkg ? `: install ${pkg} (apt-get install ${pkg})` : ': check the element name (gst-inspect-1.0 lists what is installed)'}`;
  }
  const property = /no property "([^"]+)" in element "([^"]+)"/.exec(stderr);
  if (property) return `GStreamer element "${property[2]}" has no property "${property[1]}" (see gst-inspect-1.0 ${property[2]})`;
  const syntax = /(syntax error|could not link|could not parse)[^\n]*/i.exec(stderr);
  if (syntax) return `GStreamer could not build the pipeline: ${syntax[0].trim()}`;
  return null;
}
