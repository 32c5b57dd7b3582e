/*-------------------------------------------------------------------------
 * ingest_sql.c
 *	  machpay.ingest(payload jsonb): the HTTP ingest path as a SQL function,
 *	  committed with the caller's transaction.
 *
 * The same ingest path, mapper and writer as the ingest workers and the
 * flusher; only the buffer is skipped.  The returned jsonb is the HTTP
 * response body of SPEC §4 (ingest_response.h; with "intents" when the
 * payload carried valid intents).  A payload that is not an object or
 * array of events at all, or nests too deep, is the HTTP 400 case: the
 * ingest path's ERROR here, nothing stored.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "buffer/series_registry.h"
#include "common/machpay.h"
#include "flusher/xact_stats.h"
#include "flusher/writer.h"
#include "ingest/ingest.h"

PG_FUNCTION_INFO_V1(machpay_ingest);

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

	ingest_prepare(&opts, NULL, NULL, 0);
	opts.record_rejects = true;

	memset(&mr, 0, sizeof(mr));
	map_jsonb(payload, &opts, &mr);
	ingest_raise_refusal(&mr);
	(void) series_registry_admit(&mr, &opts);

	memset(&wr, 0, sizeof(wr));
	memcpy(wr.events_by_source, mr.events_by_source, sizeof(wr.events_by_source));
	writer_write_batch(mr.rows.data, mr.rows.len, &wr);
	writer_notify_ingest(&wr, "sql");
	xact_stats_add(STAT_EVENTS_ACCEPTED, mr.accepted);
	xact_stats_add(STAT_EVENTS_REJECTED, mr.rejected);

	initStringInfo(&body);
	ingest_response_json(&body, &mr, mr.nintents > 0 ? wr.intents : NULL, wr.nintents);

	MemoryContextSwitchTo(oldcxt);
	out = DirectFunctionCall1(jsonb_in, CStringGetDatum(body.data));
	MemoryContextDelete(callcxt);
	PG_RETURN_DATUM(out);
}
