# Varnish in front of webm-relay.
#
# Install: copy to /etc/varnish/default.vcl (or point varnishd's -f at it), set the
# backend's address, restart varnish. Tested with Varnish 7.1 (Debian 12) by
# test/proxies/ and test/segments/. Varnish speaks no TLS: put hitch, nginx or HAProxy in front for https.
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
    # /<name>/index.json, /<name>/<epoch>/init.webm, /<name>/<epoch>/<seq>.webm: cached,
    # coalesced and streamed. A segment being produced comes from the relay as a chunked
    # 200 with immutable headers; with streaming on, Varnish hands that one origin
    # response, as it arrives, to every request waiting for the same URL, and to
    # requests that come while it is still arriving. The next segment is held by the
    # relay until it starts: the first request for it goes to the relay, the others
    # wait for it here. (The same URL pattern is in vcl_backend_response and
    # vcl_backend_error.)
    if (req.url ~ "^/[A-Za-z0-9][A-Za-z0-9_-]{0,63}/(index\.json|[^/?]+/[^/?]+\.webm)(\?.*)?$") {
        if (req.method != "GET" && req.method != "HEAD") {
            return (pass);
        }
        # A query string never names other bytes: one cached object per segment,
        # whatever a client appends to bust caches.
        set req.url = regsub(req.url, "\?.*$", "");
        # Segments are public: a cookie or credentials must not turn them into a pass
        # (builtin.vcl passes any request that carries one).
        unset req.http.Cookie;
        unset req.http.Authorization;
        return (hash);
    }
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
    if (bereq.url ~ "^/[A-Za-z0-9][A-Za-z0-9_-]{0,63}/(index\.json|[^/?]+/[^/?]+\.webm)$") {
        # Clients get the bytes as the relay sends them, not when the segment is whole.
        set beresp.do_stream = true;
        if (beresp.status == 200 || beresp.status == 304) {
            if (bereq.url ~ "/index\.json$") {
                # A stale index would start players behind the live edge.
                set beresp.grace = 0s;
            }
            # TTL as the relay's Cache-Control says: a year for init and segments (the
            # epoch in their URLs changes with the init segment and with every restart
            # of the relay), one second for index.json (s-maxage=1). None of
            # builtin.vcl's rules applies to these answers.
            return (deliver);
        }
        # 404 (too far ahead, out of the window, an old epoch) and 503 (not live, the
        # next segment late): cached for one second, never hit-for-miss. builtin.vcl
        # would turn a 503 (no TTL of its own) into 120 s of hit-for-miss for the URL,
        # which stops coalescing exactly when many clients retry it.
        set beresp.ttl = 1s;
        set beresp.grace = 0s;
        unset beresp.http.Set-Cookie;
        return (deliver);
    }
    # ==== segments and index.json (end) ====
}

sub vcl_backend_error {
    # ==== segments and index.json (begin) ====
    # The relay cannot be reached: answer as it does when it has nothing yet (503,
    # retry in a second), held for a second so that waiting clients are not sent to
    # the backend one after another.
    if (bereq.url ~ "^/[A-Za-z0-9][A-Za-z0-9_-]{0,63}/(index\.json|[^/?]+/[^/?]+\.webm)$") {
        set beresp.http.Content-Type = "text/plain; charset=utf-8";
        set beresp.http.Cache-Control = "public, max-age=1";
        set beresp.http.Retry-After = "1";
        set beresp.body = "relay unreachable, try again" + {"
"};
        set beresp.ttl = 1s;
        set beresp.grace = 0s;
        return (deliver);
    }
    # ==== segments and index.json (end) ====
}

sub vcl_deliver {
    # ==== segments and index.json (begin) ====
    # Whether an answer came from the cache, for people reading headers and for tests.
    if (obj.hits > 0) {
        set resp.http.X-Cache = "hit";
    } else {
        set resp.http.X-Cache = "miss";
    }
    # ==== segments and index.json (end) ====
}
