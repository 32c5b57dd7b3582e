/*-------------------------------------------------------------------------
 * buffer_sql.c
 *	  SQL functions on the shared-memory buffer: machpay.flush(),
 *	  machpay.buffer_ingest() (asynchronous ingest), machpay.buffer_status().
 *
 * buffer_ingest() takes the same payload as machpay.ingest() but, like an
 * HTTP request, puts the rows into the buffer for the flusher to commit in
 * its own transaction; a payload with payment intents returns only after
 * they are committed.  flush() asks the flusher to flush now and waits
 * until everything buffered before the call has been committed.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "access/htup_details.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "buffer/buffer_int.h"
#include "buffer/series_registry.h"
#include "common/machpay.h"
#include "mapper/mapper.h"
#include "common/stats.h"

PG_FUNCTION_INFO_V1(machpay_flush);
PG_FUNCTION_INFO_V1(machpay_buffer_ingest);
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
#if PG_VERSION_NUM >= 170000
		XLogFlush(GetXLogInsertEndRecPtr());
#else
		XLogFlush(GetXLogInsertRecPtr());
#endif
	PG_RETURN_INT64((int64) (after - before));
}

/* Wait for the ticket's outcome, interruptibly; false = not committed. */
static bool
wait_ticket(BufferTicket *ticket, IntentOutcome *outcomes, int n)
{
	for (;;)
	{
		TicketState st = buffer_ticket_poll(ticket, outcomes, n);

		if (st == TICKET_COMMITTED)
			return true;
		if (st == TICKET_FAILED)
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

Datum
machpay_buffer_ingest(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload = PG_GETARG_JSONB_P(0);
	MapOptions	opts;
	MapResult	result;
	BufferTicket ticket;
	IntentOutcome *outcomes = NULL;
	StringInfoData out;
	BufferPutStatus st;
	volatile bool ok = false;

	if (!buffer_available())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("machpay buffer is not in use"),
				 errhint("Add machpay_receiver to shared_preload_libraries, or use machpay.ingest().")));

	/* Skew from machpay.max_clock_skew, retentions from retention_policies. */
	map_options_load(&opts, GetCurrentTimestamp());
	opts.bound_entity = NULL;
	opts.remote_addr = NULL;
	opts.record_rejects = true;
	map_jsonb(payload, &opts, &result);
	if (result.status != MAP_OK)
		ereport(ERROR,
				(errcode(result.status == MAP_BAD_REQUEST ? ERRCODE_INVALID_PARAMETER_VALUE :
						 ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("invalid ingest payload: %s",
						result.refusal_message ? result.refusal_message : "bad request")));
	(void) series_registry_admit(&result, &opts);

	if (result.rows.len > 0)
	{
		st = buffer_put(&result, &ticket);
		if (st == BUFFER_PUT_FULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("machpay buffer is full"),
					 errdetail("Nothing of this payload was buffered."),
					 errhint("Retry later, or raise machpay.buffer_size.")));
		if (st == BUFFER_PUT_UNAVAILABLE)
			ereport(ERROR,
					(errcode(ERRCODE_CANNOT_CONNECT_NOW),
					 errmsg("machpay buffer is not accepting rows"),
					 errdetail("The flusher is not running or the server is shutting down.")));

		if (result.nintents > 0)
		{
			outcomes = palloc0(sizeof(IntentOutcome) * result.nintents);
			PG_TRY();
			{
				ok = wait_ticket(&ticket, outcomes, result.nintents);
			}
			PG_CATCH();
			{
				/* Cancelled: the flusher must not commit them any more. */
				buffer_ticket_release(&ticket);
				PG_RE_THROW();
			}
			PG_END_TRY();
			buffer_ticket_release(&ticket);
			if (!ok)
				ereport(ERROR,
						(errcode(ERRCODE_CANNOT_CONNECT_NOW),
						 errmsg("payment intents could not be committed"),
						 errdetail("Nothing of this payload was stored."),
						 errhint("Retry: a retried intent is stored once.")));
		}
	}

	stats_add(STAT_EVENTS_ACCEPTED, result.accepted);
	stats_add(STAT_EVENTS_REJECTED, result.rejected);
	initStringInfo(&out);
	/* Without intents, the body of an HTTP 202: no "intents" key. */
	map_response_json(&out, &result, outcomes, outcomes ? result.nintents : 0);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
