-- SDK reports -> metric rows, logs and payment intents (SPEC §4), through
-- machpay.ingest_preview (nothing is stored).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE;
RESET client_min_messages;

-- "@end" and "@start" in a JSON text become now-relative unix seconds.
CREATE FUNCTION pg_temp.ev(j text) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT replace(replace(j, '"@end"', e::text), '"@start"', (e - 60)::text)::jsonb
  FROM (SELECT extract(epoch FROM now())::bigint AS e) s $$;
CREATE FUNCTION pg_temp.pe() RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT to_timestamp(extract(epoch FROM now())::bigint) $$;

-- The seed's SDK example: exactly 10 metric rows, time = period_end (pe,
-- taken in the same statement).
CREATE TEMP TABLE sdk AS
SELECT *, pg_temp.pe() AS pe FROM machpay.ingest_preview(pg_temp.ev($${
  "source": "sdk",
  "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg",
  "period_start": "@start",
  "period_end": "@end",
  "wallet": {
    "sol_balance_lamports": 50000000,
    "usdc_balance_atomic": 2000000,
    "low_balance_warnings": 0
  },
  "interactions": {
    "Vendor_A": {
      "attempts": 100,
      "success": 98,
      "payment_latency_p99": 200,
      "vendor_latency_p99": 500,
      "errors": {
        "timeout": 1,
        "402_loop_failed": 1
      },
      "spend_atomic": 50000
    }
  }
}$$));

SELECT kind, count(*), bool_and(time = pe) AS time_is_period_end,
       bool_and(entity_id = 'QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg') AS entity
  FROM sdk GROUP BY kind ORDER BY kind;
SELECT event_index, name, labels, value, detail
  FROM sdk ORDER BY name, labels::text;

-- Several vendors; errors nested deeper join their keys; a number directly
-- under interactions or a vendor's "errors" number keep the rules; unknown
-- sections keep their path; config is no special section for an SDK.
SELECT name, labels, value FROM machpay.ingest_preview(pg_temp.ev($${
  "source": "sdk",
  "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg",
  "period_end": "@end",
  "wallet": {"sol_balance_lamports": 1, "frozen": true, "note": "x"},
  "interactions": {
    "Vendor_B": {"attempts": 3, "errors": {"http": {"503": 2}}},
    "Vendor_C": {"errors": 4, "latency": {"p50": 10}},
    "total": 9
  },
  "config": {"price_per_unit": 1},
  "gpu": {"util": 0.5}
}$$)) ORDER BY name, labels::text;

-- Log events: fields optional, time in (fractional) unix seconds, each level.
SELECT event_index, kind, time = to_timestamp(extract(epoch FROM now())::bigint - 0.5) AS at_time,
       entity_id, name, labels, value, detail
  FROM machpay.ingest_preview(replace($$[
  {"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg",
   "time": "@t", "level": "warn", "message": "402 loop failed for Vendor_A",
   "fields": {"attempt": 3, "vendor": "Vendor_A", "tags": ["a", "b"]}},
  {"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg",
   "time": "@t", "level": "debug", "message": ""},
  {"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg",
   "time": "@t", "level": "info", "message": "line\nbreak", "fields": null},
  {"source": "log", "entity_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
   "time": "@t", "level": "error", "message": "boom", "fields": {}}
]$$, '"@t"', (extract(epoch FROM now())::bigint - 0.5)::text)::jsonb)
  ORDER BY event_index;

-- Payment intents: created_at is the time of receipt; nonce and amount as
-- numbers or strings, exact.
SELECT event_index, kind, time = now() AS received_now, entity_id,
       detail->'nonce' AS nonce, detail->'amount' AS amount,
       detail->>'agent_id' AS agent_id, detail->>'token' AS token,
       length(detail->>'signature') AS signature_length
  FROM machpay.ingest_preview($$[
  {"source": "payment_intent",
   "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
   "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg",
   "nonce": "18446744073709551615", "amount": 5000,
   "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1",
   "signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt"},
  {"source": "payment_intent",
   "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp",
   "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg",
   "nonce": 1, "amount": "0", "extra": {"ignored": 1},
   "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1",
   "signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt"}
]$$) ORDER BY event_index;

-- NDJSON bodies (the text front end): one event per non-empty line; an
-- event's index counts non-empty lines only.
SELECT event_index, kind, name, labels, value FROM machpay.ingest_preview_text(
  replace(E'{"source":"sdk","agent_id":"QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg","period_end":"@end","wallet":{"a":1}}\n' ||
          E'\n   \r\n' ||
          E'{"source":"sdk","agent_id":"QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg","period_end":"@end","interactions":{"V":{"errors":{"e":2}}}}\r\n' ||
          E'{"source":"gateway","gateway_id":"BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp","period_end":"@end","system":{"b":3}}',
          '"@end"', extract(epoch FROM now())::bigint::text),
  ndjson => true) ORDER BY event_index;
