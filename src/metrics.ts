import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { RelayStats } from './relay.js';

/** Prometheus metrics, read from the relay's stats at scrape time (nothing to keep in step). */
export function createMetrics(stats: () => RelayStats): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'webm_relay_process_' });
  const gauge = (name: string, help: string, read: (s: RelayStats) => number | Record<string, number>, labelName?: string) =>
    new Gauge({
      name: `webm_relay_${name}`,
      help,
      labelNames: labelName ? [labelName] : [],
      registers: [registry],
      collect() {
        const value = read(stats());
        if (typeof value === 'number') this.set(value);
        else for (const [label, v] of Object.entries(value)) this.set({ [labelName!]: label }, v);
      },
    });
  gauge('viewers', 'Connected viewers by transport', (s) => s.viewersByTransport, 'transport');
  gauge('connections', 'Open viewer connections, probe requests included', (s) => s.connections);
  gauge('live', '1 while a producer is sending a stream', (s) => (s.live ? 1 : 0));
  gauge('bitrate_bits_per_second', 'Media bitrate over the last seconds', (s) => s.bitrate);
  gauge('clusters_total', 'Clusters relayed', (s) => s.clusters);
  gauge('bytes_in_total', 'Bytes received from producers', (s) => s.ingest.bytesIn);
  gauge('bytes_out_total', 'Media bytes queued to viewers', (s) => s.bytesOut);
  gauge('viewer_skips_total', 'Times a slow viewer skipped to the next keyframe', (s) => s.skips);
  gauge('viewer_stall_disconnects_total', 'Viewers disconnected for reading nothing', (s) => s.stallDisconnects);
  gauge('viewers_rejected_total', 'Viewers turned away at max-viewers', (s) => s.rejected);
  gauge('encoder_restarts_total', 'Restarts of the spawned encoder', (s) => s.encoderRestarts);
  gauge('producers_refused_total', 'Producers refused while another was active', (s) => s.ingest.refused);
  gauge('producers_rejected_total', 'Producers disconnected for invalid data', (s) => s.ingest.rejected);
  gauge('draining', '1 while shutting down: /healthz fails, viewers are about to be closed', (s) => (s.draining ? 1 : 0));
  gauge('upstream_read_timeouts_total', 'Edge mode: upstream connections dropped for sending nothing', (s) => s.upstream?.readTimeouts ?? 0);
  gauge('upstream_connects_total', 'Edge mode: connections to the upstream that delivered a stream', (s) => s.upstream?.connects ?? 0);
  return registry;
}
