-- SSE relay: machpay.notify_event, the one way to publish on machpay_events.
--
-- NOTIFY refuses payloads of 8000 bytes or more.  notify_event sends a
-- smaller payload as it is; a larger one is split into parts, all sent in
-- the caller's transaction (so they are delivered together, in order, and
-- only if it commits):
--   {"type": <payload type>, "part": i, "parts": n, "ref": <uuid>,
--    "chunk": <base64 of bytes ((i-1)*5000, i*5000] of the UTF-8 payload>}
-- The relay reassembles the parts of one ref and relays the whole payload
-- as one event; nothing is dropped.  Any component (and a DBA) publishes
-- with SELECT machpay.notify_event('{"type":"job", ...}').  It returns the
-- number of notifications sent.  Like NOTIFY, identical payloads sent in
-- one transaction are delivered once.
CREATE FUNCTION machpay.notify_event(payload jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    txt   text := payload::text;
    raw   bytea;
    chunk constant integer := 5000;
    n     integer;
    ref   text;
BEGIN
    IF payload IS NULL THEN
        RETURN 0;
    END IF;
    IF octet_length(txt) < 8000 THEN
        PERFORM pg_notify('machpay_events', txt);
        RETURN 1;
    END IF;
    raw := convert_to(txt, 'UTF8');
    n := ceil(octet_length(raw)::numeric / chunk)::integer;
    ref := gen_random_uuid()::text;
    FOR i IN 1..n LOOP
        PERFORM pg_notify('machpay_events',
            json_build_object(
                'type', left(payload->>'type', 200),
                'part', i,
                'parts', n,
                'ref', ref,
                'chunk', translate(encode(substring(raw FROM (i - 1) * chunk + 1 FOR chunk), 'base64'), E'\n', ''))::text);
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION machpay.notify_event(jsonb) IS
    'Publish an event on machpay_events for the SSE relay; payloads of 8000 bytes or more are sent in parts the relay reassembles.';
