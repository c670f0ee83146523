# Varnish in front of webm-relay.
#
# Install: copy to /etc/varnish/default.vcl (or point varnishd's -f at it), set the
# backend's address, restart varnish. Tested with Varnish 7.1 (Debian 12) by
# test/proxies/. Varnish speaks no TLS: put hitch, nginx or HAProxy in front for https.
#
# Sections marked "endless stream, WebSocket, API" keep Varnish out of the way of what
# no cache can hold; the segment sections cache what it can.

vcl 4.1;

backend webm_relay {
    .host = "127.0.0.1";
    .port = "9001";
    # Between two reads of a response: media flows many times a second, and during a
    # producer gap the relay sends keep-alive bytes every second.
    .between_bytes_timeout = 60s;
    .first_byte_timeout = 30s;
}

sub vcl_recv {
    # ==== endless stream, WebSocket, API (begin) ====
    # WebSocket (/live, /<name>): Varnish cannot cache or stream an upgraded connection;
    # pipe hands the raw connection through. Without this the Upgrade header is dropped
    # and the relay answers 426.
    if (req.http.Upgrade ~ "(?i)websocket") {
        return (pipe);
    }
    # The endless stream /live.webm (/<name>.webm, one path segment): one response per
    # viewer that never ends. Passed, not cached: a cache object never completes, and a
    # `no-store` answer would otherwise put the URL in hit-for-miss.
    if (req.url ~ "^/[^/?]+\.webm(\?.*)?$") {
        # send_timeout is the longest Varnish spends sending one response (default
        # 600 s): it would cut every viewer after 10 minutes. idle_send_timeout (between
        # two writes) still catches a viewer that stopped reading.
        set sess.send_timeout = 365d;
        return (pass);
    }
    # State is never cached: a dead relay must not look alive from the cache.
    if (req.url ~ "^/(healthz|metrics|api/)") {
        return (pass);
    }
    # ==== endless stream, WebSocket, API (end) ====

    # ==== segments and index.json (begin) ====
    # ==== segments and index.json (end) ====
}

sub vcl_pipe {
    # ==== endless stream, WebSocket, API (begin) ====
    # Hop-by-hop headers are not copied to a piped request by default.
    if (req.http.Upgrade) {
        set bereq.http.Upgrade = req.http.Upgrade;
        set bereq.http.Connection = req.http.Connection;
    }
    # A WebSocket stays piped while open; pipe_timeout (default 60 s, idle in both
    # directions) holds because the relay pings every second while the stream is idle.
    # ==== endless stream, WebSocket, API (end) ====
}

sub vcl_backend_response {
    # ==== endless stream, WebSocket, API (begin) ====
    # Nothing to add: the relay marks the stream, state, errors and its 426 `no-store`,
    # which builtin.vcl never caches (the URL goes to hit-for-miss instead).
    # ==== endless stream, WebSocket, API (end) ====

    # ==== segments and index.json (begin) ====
    # ==== segments and index.json (end) ====
}
