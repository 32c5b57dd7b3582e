-- Gateway reports -> metric rows and the vendor config row (SPEC §4),
-- through machpay.ingest_preview (nothing is stored).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE;
RESET client_min_messages;

-- "@end" and "@start" in a JSON text become now-relative unix seconds.
CREATE FUNCTION pg_temp.ev(j text) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT replace(replace(j, '"@end"', e::text), '"@start"', (e - 60)::text)::jsonb
  FROM (SELECT extract(epoch FROM now())::bigint AS e) s $$;
CREATE FUNCTION pg_temp.pe() RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT to_timestamp(extract(epoch FROM now())::bigint) $$;

-- The seed's gateway example: exactly 20 metric rows, time = period_end,
-- plus its config (pe: period_end, taken in the same statement).
CREATE TEMP TABLE gw AS
SELECT *, pg_temp.pe() AS pe FROM machpay.ingest_preview(pg_temp.ev($${
  "source": "gateway",
  "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
  "period_start": "@start",
  "period_end": "@end",
  "config": {
    "accepted_mint": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1",
    "price_per_unit": 5000,
    "version": "v1.2"
  },
  "system": {
    "cpu_usage_percent": 12.5,
    "ram_usage_mb": 256,
    "goroutines": 450,
    "gc_pause_ns": 15000,
    "uptime_seconds": 86400
  },
  "network": {
    "bytes_in": 1048576,
    "bytes_out": 524288,
    "active_connections": 120
  },
  "business": {
    "total_revenue": 50000,
    "routes": {
      "/chat": {
        "200": 500,
        "402": 100,
        "500": 2,
        "latency_p99": 150
      },
      "/image": {
        "200": 50,
        "402": 10,
        "500": 0,
        "latency_p99": 500
      }
    },
    "solvency_rejects": 15,
    "replay_attacks_blocked": 5,
    "signature_failures": 2
  }
}$$));

SELECT kind, count(*), bool_and(time = pe) AS time_is_period_end,
       bool_and(entity_id = 'BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp') AS entity
  FROM gw GROUP BY kind ORDER BY kind;
SELECT event_index, name, labels, value, detail
  FROM gw WHERE kind = 'metric' ORDER BY name, labels::text;
SELECT name, labels, value FROM gw WHERE kind = 'metric' AND name = 'business.route.requests'
  AND labels @> '{"status": "402"}' ORDER BY labels->>'route';
SELECT detail FROM gw WHERE kind = 'config';

-- Route rules: exactly three digits make a status; any other key under a
-- route (four digits, letters, nested objects) is business.route.<key>;
-- a number directly under routes follows the plain path rule.
SELECT name, labels, value FROM machpay.ingest_preview(pg_temp.ev($${
  "source": "gateway",
  "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
  "period_end": "@end",
  "business": {
    "routes": {
      "/a": {"204": 1, "2000": 2, "20": 3, "2x0": 4, "latency": {"p50": 5, "p99": 6}},
      "/b\"q\\": {"404": 7},
      "count": 8
    }
  }
}$$)) ORDER BY name, labels::text;

-- Unknown sections and top-level numbers keep their dotted path; booleans
-- are 0/1; strings, nulls and arrays are ignored; no period_start is fine.
SELECT name, labels, value FROM machpay.ingest_preview(pg_temp.ev($${
  "source": "gateway",
  "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
  "period_end": "@end",
  "uptime": 7,
  "future_section": {"a": {"b": {"c": 1.25}}, "on": true, "off": false,
                     "s": "text", "n": null, "arr": [1, 2, {"x": 3}]},
  "system": {"cpu_usage_percent": -0.5, "big": 1e300}
}$$)) ORDER BY name;

-- Fractional period_end, kept to the microsecond.
SELECT count(*), bool_and(time = to_timestamp(extract(epoch FROM now())::bigint - 0.25))
  FROM machpay.ingest_preview(replace($${"source": "gateway",
  "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
  "period_end": "@end", "system": {"x": 1}}$$, '"@end"',
  (extract(epoch FROM now())::bigint - 0.25)::text)::jsonb);

-- Config: only the fields present; price as a decimal string, exact u64;
-- withdrawal_address; null config or null fields count as absent, and an
-- empty config makes no row.
SELECT event_index, kind, detail FROM machpay.ingest_preview(pg_temp.ev($$[
  {"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
   "period_end": "@end", "config": {"version": "v2"}},
  {"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
   "period_end": "@end", "config": {"price_per_unit": "18446744073709551615",
   "withdrawal_address": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg",
   "accepted_mint": null, "extra": 5}},
  {"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
   "period_end": "@end", "config": null},
  {"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
   "period_end": "@end", "config": {}}
]$$)) ORDER BY event_index, kind;

-- An array of events keeps each event's index; labels of one set are one
-- value whatever the event.
SELECT event_index, name, labels, value FROM machpay.ingest_preview(pg_temp.ev($$[
  {"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
   "period_end": "@end", "business": {"routes": {"/x": {"200": 1}}}},
  {"source": "gateway", "gateway_id": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1",
   "period_end": "@end", "business": {"routes": {"/x": {"200": 2}}}}
]$$)) ORDER BY event_index;

-- The same through the request-text front end (POST /v1/ingest bodies).
SELECT event_index, kind, name, labels, value, detail FROM machpay.ingest_preview_text(pg_temp.ev($$
  {"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
   "period_end": "@end", "business": {"routes": {"/t": {"503": 9, "p": true}}},
   "config": {"price_per_unit": 0}}$$)::text) ORDER BY event_index, kind, name;
