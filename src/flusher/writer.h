/*-------------------------------------------------------------------------
 * writer.h
 *	  The bulk writer: a row batch into the tables, inside the caller's
 *	  transaction.
 *
 * Metrics and logs go through table_multi_insert with partition routing as
 * COPY FROM does it; intents are de-duplicated for ever on (gateway_id,
 * agent_id, nonce); config rows upsert vendor_profiles.  The caller owns the
 * transaction (the flusher: one per batch; machpay.ingest(): the user's).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_WRITER_H
#define MACHPAY_WRITER_H

#include "buffer/buffer.h"

typedef struct WriteResult
{
	int64		nrows[ROW_KIND_MAX + 1];	/* rows stored, by RowKind */
	int64		config_changed;
	int64		config_unknown_gateway;
	int64		config_stale;
	int			nintents;
	IntentOutcome *intents;		/* one per ROW_INTENT row, batch order */
	/* accepted events by EventSource: filled by the caller (the writer sees rows) */
	int64		events_by_source[EVENT_SOURCE_COUNT];
} WriteResult;

/*
 * Store the batch; ereports on failure (the caller's transaction aborts).
 * The writer sets every field of *result but events_by_source (the
 * caller's); result->intents is allocated in the caller's memory context.
 * Also, in the same transaction: marks the hours that received metric rows
 * in machpay.rollup_invalidations (so the rollup re-rolls late data), and
 * queues the `payment_intent` (new intents only) and `config` notifications,
 * plus `gateway`/`sdk` ones when machpay.notify_telemetry is on.
 */
extern void writer_write_batch(const char *rows, Size len, WriteResult *result);

/*
 * Queue the `ingest` summary notification of SPEC §5 for this batch
 * (sent at commit).  `origin` says who wrote it: "http" or "sql".
 */
extern void writer_notify_ingest(const WriteResult *result, const char *origin);

#endif							/* MACHPAY_WRITER_H */
