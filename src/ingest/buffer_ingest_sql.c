/*-------------------------------------------------------------------------
 * buffer_ingest_sql.c
 *	  machpay.buffer_ingest(payload jsonb): the ingest path as a SQL
 *	  function that goes through the shared-memory buffer, as HTTP does.
 *
 * It takes the same payload as machpay.ingest() but, like an HTTP request,
 * puts the rows into the buffer for the flusher to commit in its own
 * transaction; a payload with payment intents returns only after they are
 * committed.  The returned jsonb is the answer of ingest_response.h.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/wait_event.h"

#include "buffer/buffer.h"
#include "buffer/series_registry.h"
#include "common/stats.h"
#include "ingest/ingest.h"

PG_FUNCTION_INFO_V1(machpay_buffer_ingest);

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

	ingest_prepare(&opts, NULL, NULL, 0);
	opts.record_rejects = true;
	map_jsonb(payload, &opts, &result);
	ingest_raise_refusal(&result);
	(void) series_registry_admit(&result, &opts);

	if (result.rows.len > 0)
	{
		st = ingest_put(&result, &ticket);
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
	ingest_response_json(&out, &result, outcomes, outcomes ? result.nintents : 0);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
