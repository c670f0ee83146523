import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { StreamStats } from './protocol.js';
import type { Stream } from './stream/stream.js';

/**
 * Prometheus metrics, read from each stream's stats at scrape time (nothing to keep
 * in step). Every series of a stream carries a `stream` label; totals since start
 * are counters, levels are gauges.
 */
export function createMetrics(relay: { streams: ReadonlyMap<string, Stream> }): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'webm_relay_process_' });
  const snapshot = () => [...relay.streams.values()].map((s) => s.stats());

  const gauge = (name: string, help: string, read: (s: StreamStats) => number | Record<string, number>, extraLabel?: string) =>
    new Gauge({
      name: `webm_relay_${name}`,
      help,
      labelNames: extraLabel ? ['stream', extraLabel] : ['stream'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of snapshot()) {
          const value = read(s);
          if (typeof value === 'number') this.set({ stream: s.name }, value);
          else for (const [label, v] of Object.entries(value)) this.set({ stream: s.name, [extraLabel!]: label }, v);
        }
      },
    });
  const counter = (name: string, help: string, read: (s: StreamStats) => number) =>
    new Counter({
      name: `webm_relay_${name}`,
      help,
      labelNames: ['stream'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of snapshot()) this.inc({ stream: s.name }, read(s));
      },
    });

  gauge('viewers', 'Viewers watching, by transport', (s) => s.viewersByTransport, 'transport');
  gauge('connections', 'Open viewer connections, probe requests included', (s) => s.connections);
  gauge('live', '1 while a producer is sending the stream', (s) => (s.live ? 1 : 0));
  gauge('bitrate_bits_per_second', 'Media bitrate over the last seconds', (s) => s.bitrate);
  counter('clusters_total', 'Clusters relayed', (s) => s.clusters);
  counter('bytes_in_total', 'Bytes received from producers', (s) => s.ingest.bytesIn);
  counter('bytes_out_total', 'Media bytes queued to viewers', (s) => s.bytesOut);
  counter('viewer_skips_total', 'Times a slow viewer skipped to the next keyframe', (s) => s.skips);
  counter('viewer_slow_disconnects_total', 'Viewers disconnected for a backlog past max-queue (recover: disconnect)', (s) => s.slowDisconnects);
  counter('viewer_stall_disconnects_total', 'Viewers disconnected for reading nothing', (s) => s.stallDisconnects);
  counter('viewers_rejected_total', 'Viewers turned away at max-viewers', (s) => s.rejected);
  counter('encoder_restarts_total', 'Restarts of the spawned encoder', (s) => s.encoderRestarts);
  counter('producers_refused_total', 'Producers refused while another was active', (s) => s.ingest.refused);
  counter('producers_rejected_total', 'Producers disconnected for invalid or unplayable data', (s) => s.ingest.rejected);
  gauge('segments_held_bytes', 'Bytes of segments kept for HTTP caches (window, segment being produced, init)', (s) => s.segments.bytes);
  gauge('segment_requests_parked', 'Requests waiting for the next segment to start', (s) => s.segments.parked);
  counter('segment_requests_total', 'Segment requests answered with a segment (a cache in front makes this one per segment)', (s) => s.segments.requests.segment);
  counter('segment_index_requests_total', 'index.json requests', (s) => s.segments.requests.index);
  // Recording (streams with record on; 0 for the others).
  gauge('recording_failing', '1 while writing the recording fails (disk full, unwritable, too slow)', (s) => (s.recording?.failing ? 1 : 0));
  gauge('recording_queued_bytes', 'Bytes of the recording waiting to be written', (s) => s.recording?.queuedBytes ?? 0);
  counter('recording_files_total', 'Recording files started', (s) => s.recording?.files ?? 0);
  counter('recording_failures_total', 'Recording files ended by a write failure or an overflowing queue', (s) => s.recording?.failures ?? 0);
  counter('recording_deleted_total', 'Recording files deleted by record-keep or record-max-bytes', (s) => s.recording?.deleted ?? 0);
  counter('segment_not_found_total', 'Segment URLs answered 404 (junk, too far ahead, out of the window, old epoch)', (s) => s.segments.requests.notFound);
  counter('upstream_read_timeouts_total', 'Edge: upstream connections dropped for sending nothing for --upstream-timeout', (s) => s.upstream?.readTimeouts ?? 0);
  counter('upstream_connects_total', 'Edge: connections to the upstream that delivered a stream', (s) => s.upstream?.connects ?? 0);
  new Counter({
    name: 'webm_relay_access_failures_total',
    help: 'Credentials refused (missing, wrong or expired), by who presented them: read (viewers) or publish',
    labelNames: ['stream', 'kind'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of snapshot()) {
        this.inc({ stream: s.name, kind: 'read' }, s.accessFailures.read);
        this.inc({ stream: s.name, kind: 'publish' }, s.accessFailures.publish);
      }
    },
  });
  return registry;
}
