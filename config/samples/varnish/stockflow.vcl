vcl 4.1;

# Varnish 7.1 (+ varnish-modules for xkey) in front of stockflow's query API.
#
# What it does, and why:
# - Objects are tagged with the origin's `Surrogate-Key` (copied into xkey's `xkey`
#   header), so `PURGE` with `xkey-purge: sku:SKU-1` removes exactly that SKU's objects.
#   stockflow's purge worker (`--edge-purge-url`) sends one per changed SKU once the read
#   models show the change, and reads back `x-purged` (how many objects went).
# - `Surrogate-Control: max-age=N` (`--edge-ttl-seconds`) sets how long the edge keeps a
#   stock or availability object; clients still see the origin's `Cache-Control`.
# - `stale-while-revalidate` (2 s) becomes grace while the origin is healthy;
#   `stale-if-error` (1 h) is the grace used when it is not: the probe marks it sick, or a
#   fetch fails and the request is restarted once to take the stale object.
# - `x-stockflow-warm: 1` from a purger forces a fresh fetch (the purge worker's warm-up).
#
# scripts/varnish.sh renders this file with the backend's port; elsewhere edit `.port`.

import std;
import xkey;

backend stockflow {
    .host = "127.0.0.1";
    .port = "8080";
    # A dead origin is noticed within about a second, and stale objects are served from
    # then on. /readyz also fails while stockflow drains for a shutdown.
    .probe = {
        .url = "/readyz";
        .interval = 500ms;
        .timeout = 300ms;
        .window = 3;
        .threshold = 2;
        .initial = 1;
    }
    .connect_timeout = 1s;
    .first_byte_timeout = 10s;
}

# Who may purge and force fresh fetches: the projectors. List their network in production.
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Not allowed"));
        }
        if (req.http.xkey-purge) {
            set req.http.x-purged = xkey.purge(req.http.xkey-purge);
        } elsif (req.http.xkey-softpurge) {
            # Keeps the objects as stale (served while the origin fails).
            set req.http.x-purged = xkey.softpurge(req.http.xkey-softpurge);
        } else {
            return (synth(400, "xkey-purge header required"));
        }
        return (synth(200, "Purged"));
    }
    if (req.http.x-stockflow-warm && client.ip ~ purgers) {
        set req.hash_always_miss = true;
    }
    unset req.http.x-stockflow-warm;
    # Only our own restart may ask for stale objects.
    if (req.restarts == 0) {
        unset req.http.x-stale-if-error;
    }
    if (req.http.x-stale-if-error) {
        set req.grace = 1h;
    } elsif (std.healthy(req.backend_hint)) {
        # The origin's stale-while-revalidate; a sick origin leaves the object's whole
        # grace (its stale-if-error) usable.
        set req.grace = 2s;
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # The query API's read-model answers; everything else goes to the origin.
    if (req.url !~ "^/v1/((stock|availability|search|movements|pickup)(/|\?|$)|bundles/[^/?]+/availability|channels/[^/?]+/availability/)") {
        return (pass);
    }
    # Falls through to the built-in vcl_recv: requests with Authorization or Cookie pass
    # (a response cut to one caller is private anyway).
}

sub vcl_hash {
    # One API behind this cache: the URL alone names an object, so the warm-up (sent to
    # the cache's own address) fills the objects shoppers read under the public host name.
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_response {
    if (beresp.status >= 500 && !bereq.http.x-stale-if-error) {
        # Keep what we have: the client side restarts and serves the stale object.
        return (abandon);
    }
    if (beresp.status != 200) {
        # 404s and refusals are not kept: a key created a moment later must show.
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        return (deliver);
    }
    if (beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }
    if (beresp.http.Surrogate-Control ~ "max-age=[0-9]+") {
        set beresp.ttl = std.duration(
            regsub(beresp.http.Surrogate-Control, "^.*max-age=([0-9]+).*$", "\1") + "s",
            beresp.ttl);
    }
    if (beresp.http.Cache-Control ~ "stale-if-error=[0-9]+") {
        set beresp.grace = std.duration(
            regsub(beresp.http.Cache-Control, "^.*stale-if-error=([0-9]+).*$", "\1") + "s",
            beresp.grace);
    }
    unset beresp.http.Surrogate-Control;
}

sub vcl_backend_error {
    # The origin is unreachable: keep any stale object, answer through vcl_synth.
    return (abandon);
}

sub vcl_synth {
    if (req.method == "PURGE") {
        set resp.http.x-purged = req.http.x-purged;
        return (deliver);
    }
    if (resp.status == 503 && req.restarts == 0 && (req.method == "GET" || req.method == "HEAD")) {
        # stale-if-error: once more, allowed the whole grace of a stale object.
        set req.http.x-stale-if-error = "1";
        return (restart);
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        if (obj.ttl < 0s) {
            set resp.http.X-Cache = "HIT-STALE";
        } else {
            set resp.http.X-Cache = "HIT";
        }
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.xkey;
}
