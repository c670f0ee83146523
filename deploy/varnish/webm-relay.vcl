vcl 4.1;

# Varnish in front of one webm-relay: it fans out the segment URLs
#   /<name>/index.json, /<name>/<epoch>/init.webm, /<name>/<epoch>/<seq>.webm
# to any number of clients while the relay serves each URL about once.
#
# How it works with the relay's headers (read Varnish's builtin.vcl next to this):
# - A segment being produced comes from the relay as a chunked 200 with immutable
#   headers. With streaming on, Varnish hands that one origin response, as it
#   arrives, to every request waiting for the same URL (request coalescing), and to
#   requests that come later while it is still arriving.
# - The next segment is "parked" at the relay until it starts: the first request for it
#   goes to the relay; the others wait on it in Varnish, not at the relay.
# - TTLs come from the relay's Cache-Control: a year for init and segments (their
#   URLs never name other bytes: the epoch changes with the init segment and with
#   every restart of the relay), one second for index.json (s-maxage=1).
# - 404 (a segment too far ahead, out of the window, an old epoch) and 503 (not live,
#   the next segment late) are cached for one second. builtin.vcl would turn a 503,
#   or any no-store/no-cache/private answer, into 120 s of hit-for-miss for that URL,
#   which would stop coalescing exactly when many clients retry it.
#
# Run:  varnishd -n DIR -F -a :80 -f webm-relay.vcl -s malloc,256m
# and set the backend's host and port below to the relay's.

# ---------------------------------------------------------------------------------
# Backend: the relay
# ---------------------------------------------------------------------------------
backend relay {
    .host = "127.0.0.1";
    .port = "9001";
    .connect_timeout = 2s;
    # A request for the next segment is held by the relay until the segment starts
    # (at most 15 s, then 503): the first byte may take that long.
    .first_byte_timeout = 20s;
    # Within a segment, bytes come once per frame; a GOP of several seconds must fit.
    .between_bytes_timeout = 10s;
}

sub vcl_recv {
    # -----------------------------------------------------------------------------
    # Segments and index.json: cached, coalesced, streamed.
    # (The same pattern is repeated in vcl_backend_response and vcl_backend_error.)
    # -----------------------------------------------------------------------------
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

    # -----------------------------------------------------------------------------
    # Everything else: the endless /<name>.webm, the WebSocket, the player page and
    # the API. Not cacheable here: passed (streamed) or piped.
    # -----------------------------------------------------------------------------
    if (req.http.Upgrade ~ "(?i)websocket") {
        return (pipe);
    }
    return (pass);
}

sub vcl_pipe {
    # -----------------------------------------------------------------------------
    # WebSocket: the upgrade headers must reach the relay.
    # -----------------------------------------------------------------------------
    if (req.http.Upgrade) {
        set bereq.http.Upgrade = req.http.Upgrade;
        set bereq.http.Connection = req.http.Connection;
    }
}

sub vcl_backend_response {
    # -----------------------------------------------------------------------------
    # Segments and index.json
    # -----------------------------------------------------------------------------
    if (bereq.url ~ "^/[A-Za-z0-9][A-Za-z0-9_-]{0,63}/(index\.json|[^/?]+/[^/?]+\.webm)$") {
        # Clients get the bytes as the relay sends them, not when the segment is whole.
        set beresp.do_stream = true;
        if (beresp.status == 200 || beresp.status == 304) {
            if (bereq.url ~ "/index\.json$") {
                # A stale index would start players behind the live edge.
                set beresp.grace = 0s;
            }
            # TTL as the relay's Cache-Control says; skip builtin.vcl's rules, none applies.
            return (deliver);
        }
        # 404, 503: one second, cacheable, never hit-for-miss.
        set beresp.ttl = 1s;
        set beresp.grace = 0s;
        unset beresp.http.Set-Cookie;
        return (deliver);
    }
}

sub vcl_backend_error {
    # -----------------------------------------------------------------------------
    # Segments and index.json: the relay cannot be reached. Answer as the relay does
    # when it has nothing yet: 503, retry in a second, held for a second.
    # -----------------------------------------------------------------------------
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
}

sub vcl_deliver {
    # Whether this answer came from the cache: for people reading headers and for tests.
    if (obj.hits > 0) {
        set resp.http.X-Cache = "hit";
    } else {
        set resp.http.X-Cache = "miss";
    }
}
