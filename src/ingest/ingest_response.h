/*-------------------------------------------------------------------------
 * ingest_response.h
 *	  The answer to an ingest (SPEC §4): one JSON body for the HTTP server,
 *	  machpay.ingest() and machpay.buffer_ingest().
 *
 * An *answer* is the body of a 202 (telemetry buffered), a 200 (payment
 * intents committed: the same body plus "intents") or a 422 (every event
 * rejected), or the {"error":...} body of a refused request.  Built from
 * the mapper's result and the intents' outcomes only, so it compiles in
 * frontend programs too (the mapper's fuzz harness builds every answer).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_INGEST_RESPONSE_H
#define MACHPAY_INGEST_RESPONSE_H

#include "buffer/buffer.h"
#include "mapper/mapper.h"

/*
 * The error word of a refused request ("bad_request", "too_large",
 * "too_many_rejects"), and its HTTP status (400, 413, 422).
 */
extern const char *ingest_refusal_code(MapStatus status);
extern int	ingest_refusal_http_status(MapStatus status);

/*
 * {"accepted":n,"rejected":m,"errors":[...]}, plus "intents":[...] when
 * intents is not NULL; for a refused request (status not MAP_OK)
 * {"error":...,"message":...}.
 */
extern void ingest_response_json(StringInfo out, const MapResult *result,
								 const IntentOutcome *intents, int nintents);

#endif							/* MACHPAY_INGEST_RESPONSE_H */
