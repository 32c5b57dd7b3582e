-- SSE relay: machpay.notify_event, the one way to publish on machpay_events
-- from SQL (the receiver's C components use the same publisher,
-- src/common/notify.c).
--
-- Any login may NOTIFY, so the relay forwards only notifications signed
-- with a key the server makes at start in shared memory: the publisher adds
-- ,"mac":"<counter><HMAC-SHA256>" to the object and the relay checks and
-- removes it.  A plain NOTIFY or pg_notify on machpay_events is dropped and
-- counted (sse_notifications_forged in stat_receiver); so is a signed one
-- sent again (sse_notifications_replayed): each counter is relayed once.
--
-- NOTIFY refuses payloads of 8000 bytes or more.  A payload that fits,
-- signed, is sent as it is; a larger one is split into parts, all sent in
-- the caller's transaction (so they are delivered together, in order, and
-- only if it commits):
--   {"type": <payload type>, "part": i, "parts": n, "ref": <random hex>,
--    "chunk": <base64 of bytes ((i-1)*5000, i*5000] of the UTF-8 payload>}
-- The relay reassembles the parts of one ref and relays the whole payload
-- as one event; nothing is dropped.  The payload must be a JSON object
-- (the relay drops and counts one nested deeper than 64 levels,
-- sse_notifications_invalid).
-- It returns the number of notifications sent.  Unlike a plain NOTIFY,
-- identical payloads sent in one transaction are each delivered (their
-- counters differ).  Not granted to PUBLIC: publishing is the receiver's,
-- and its owner's to grant.
CREATE FUNCTION machpay.notify_event(payload jsonb) RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'machpay_notify_event';
COMMENT ON FUNCTION machpay.notify_event(jsonb) IS
    'Publish an event on machpay_events for the SSE relay; signed; payloads too large for one notification are sent in parts the relay reassembles.';
REVOKE ALL ON FUNCTION machpay.notify_event(jsonb) FROM PUBLIC;
