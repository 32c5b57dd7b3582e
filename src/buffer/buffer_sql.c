/*-------------------------------------------------------------------------
 * buffer_sql.c
 *	  SQL functions on the shared-memory buffer: machpay.flush() and
 *	  machpay.buffer_status().
 *
 * flush() asks the flusher to flush now and waits until everything
 * buffered before the call has been committed.  (machpay.buffer_ingest(),
 * a producer like an HTTP request, is a front end of the ingest path:
 * ingest/buffer_ingest_sql.c.)
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "access/htup_details.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "buffer/buffer_int.h"
#include "common/machpay.h"

PG_FUNCTION_INFO_V1(machpay_flush);
PG_FUNCTION_INFO_V1(machpay_buffer_status);

Datum
machpay_buffer_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum((int64) buffer_bytes_used());
	values[1] = Int64GetDatum((int64) buffer_capacity());
	values[2] = Int32GetDatum(buffer_intents_waiting());
	values[3] = BoolGetDatum(buffer_accepting());
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * The end of the WAL inserted so far.  Before 17 only the insert position
 * is exported, and at a page boundary it points past the next page's
 * header, which is not written yet: back off to the boundary, which is
 * where the last record ended.
 */
static XLogRecPtr
inserted_wal_end(void)
{
#if PG_VERSION_NUM >= 170000
	return GetXLogInsertEndRecPtr();
#else
	XLogRecPtr	pos = GetXLogInsertRecPtr();

	if (XLogSegmentOffset(pos, wal_segment_size) == SizeOfXLogLongPHD)
		return pos - SizeOfXLogLongPHD;
	if (pos % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		return pos - SizeOfXLogShortPHD;
	return pos;
#endif
}

Datum
machpay_flush(PG_FUNCTION_ARGS)
{
	uint64		target;
	uint64		before;
	uint64		after;

	if (!buffer_available())
	{
		ereport(NOTICE,
				(errmsg("machpay buffer is not in use"),
				 errdetail("machpay_receiver is not in shared_preload_libraries: nothing is buffered.")));
		PG_RETURN_INT64(0);
	}
	if (!buffer_request_flush(&target, &before))
	{
		ereport(NOTICE,
				(errmsg("machpay flusher is not running"),
				 errdetail("It waits for the extension in machpay.database (\"%s\"), or the server is a standby.",
						   machpay_database)));
		PG_RETURN_INT64(0);
	}
	if (!buffer_wait_flushed(target, &after))
		ereport(WARNING,
				(errmsg("machpay flusher stopped before the buffer was flushed")));
	/*
	 * Telemetry may have committed asynchronously: make it durable too.  The
	 * insert position can point past a page header not written yet, which
	 * XLogFlush refuses ("not satisfied"); from 17 there is the end of what
	 * was inserted, safe to flush.
	 */
	if (!RecoveryInProgress())
		XLogFlush(inserted_wal_end());
	PG_RETURN_INT64((int64) (after - before));
}
