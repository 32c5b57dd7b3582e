/*-------------------------------------------------------------------------
 * sqlapi.c
 *	  machpay.ingest(payload jsonb): the HTTP ingest path as a SQL function,
 *	  committed with the caller's transaction.
 *
 * The same mapper and writer as the ingest workers and the flusher; only
 * the buffer is skipped.  The returned jsonb is the HTTP response body of
 * SPEC §4 (with "intents" when the payload carried valid intents).  A
 * payload that is not an object or array of events at all, or nests too
 * deep, is the HTTP 400 case: an ERROR here, nothing stored.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "machpay.h"
#include "mapper.h"
#include "stats.h"
#include "writer.h"

PG_FUNCTION_INFO_V1(machpay_ingest);

/* Retentions of machpay.retention_policies, which a DBA may change. */
static void
sqlapi_read_retentions(MapOptions *opts)
{
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute("SELECT table_name,"
					 "       (extract(epoch FROM retention) * 1000000)::int8"
					 "  FROM machpay.retention_policies"
					 " WHERE table_name IN ('metrics', 'debug_logs')",
					 true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading machpay.retention_policies failed: %s",
			 SPI_result_code_string(rc));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		bool		isnull;
		int64		us = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
													 SPI_tuptable->tupdesc, 2, &isnull));

		if (isnull || name == NULL)
			continue;
		if (strcmp(name, "metrics") == 0)
			opts->metrics_retention_us = us;
		else if (strcmp(name, "debug_logs") == 0)
			opts->logs_retention_us = us;
	}
	SPI_finish();
}

Datum
machpay_ingest(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload = PG_GETARG_JSONB_P(0);
	MemoryContext callcxt;
	MemoryContext oldcxt;
	MapOptions	opts;
	MapResult	mr;
	WriteResult wr;
	StringInfoData body;
	Datum		out;

	callcxt = AllocSetContextCreate(CurrentMemoryContext, "machpay ingest call",
									ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(callcxt);

	map_options_init(&opts, GetCurrentStatementStartTimestamp());
	opts.max_clock_skew_us = (int64) machpay_max_clock_skew_s * USECS_PER_SEC;
	opts.bound_entity = NULL;
	opts.remote_addr = NULL;
	opts.record_rejects = true;
	sqlapi_read_retentions(&opts);

	memset(&mr, 0, sizeof(mr));
	map_jsonb(payload, &opts, &mr);
	if (mr.status == MAP_BAD_REQUEST)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("%s", mr.bad_request_message ? mr.bad_request_message
						: "invalid ingest payload"),
				 errhint("The payload is one event object or an array of event objects.")));

	memset(&wr, 0, sizeof(wr));
	memcpy(wr.events_by_source, mr.events_by_source, sizeof(wr.events_by_source));
	writer_write_batch(mr.rows.data, mr.rows.len, &wr);
	writer_notify_ingest(&wr, "sql");
	stats_add(STAT_EVENTS_ACCEPTED, mr.accepted);
	stats_add(STAT_EVENTS_REJECTED, mr.rejected);

	initStringInfo(&body);
	map_response_json(&body, &mr, mr.nintents > 0 ? wr.intents : NULL, wr.nintents);

	MemoryContextSwitchTo(oldcxt);
	out = DirectFunctionCall1(jsonb_in, CStringGetDatum(body.data));
	MemoryContextDelete(callcxt);
	PG_RETURN_DATUM(out);
}
