SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;
-- machpay.notify_event: one signed notification while the object and its
-- signature (90 bytes) stay under NOTIFY's 8000-byte limit, parts of 5000
-- bytes (base64) above it; NULL sends nothing.  What is on the wire (the
-- signature, the parts reassembled) is checked in test/t/045_sse_forged.pl.
SELECT machpay.notify_event('{"type":"job","job":"rollup","status":"succeeded"}');
-- 7,883 + 27 bytes = 7,910: the largest object sent whole.
SELECT octet_length(jsonb_build_object('type', 'big', 'blob', repeat('x', 7883))::text) AS whole_bytes,
       machpay.notify_event(jsonb_build_object('type', 'big', 'blob', repeat('x', 7883))) AS sent;
SELECT machpay.notify_event(jsonb_build_object('type', 'big', 'blob', repeat('x', 7884)));
SELECT machpay.notify_event(jsonb_build_object('type', 'big', 'blob', repeat('é', 20000)));
SELECT machpay.notify_event('{}');
SELECT machpay.notify_event(NULL);
-- Only objects: the relay relays objects.
SELECT machpay.notify_event('[1]');
SELECT machpay.notify_event('"text"');
-- Publishing is the receiver's: nothing is granted to PUBLIC.
SELECT has_function_privilege('public', 'machpay.notify_event(jsonb)', 'EXECUTE') AS public_may_publish;
