/*-------------------------------------------------------------------------
 * ingest_path.c
 *	  The one ingest path's setup and refusal: the settings loader, the
 *	  receipt clock, ingest_prepare(), the hand-over of rows to the buffer
 *	  and the SQL error of a refused payload.
 *
 * Every front end (HTTP, machpay.ingest(), machpay.buffer_ingest(), the
 * previews) prepares its mapper options here, so a payload is checked
 * against the same settings, at the same kind of time, and refused with
 * the same words wherever it comes in.  The settings are the only part
 * read from tables (SPI); the HTTP workers load them now and then and keep
 * them, the SQL front ends load them per call.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type_d.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "common/machpay.h"
#include "ingest/ingest.h"

/*
 * The retention of one logical table, or -1 when the row (or the table,
 * during an upgrade) is missing.
 */
static int64
retention_us(const char *table_name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int64		result = -1;

	args[0] = CStringGetTextDatum(table_name);
	if (SPI_execute_with_args("SELECT (extract(epoch FROM retention) * 1000000)::int8"
							  "  FROM machpay.retention_policies WHERE table_name = $1",
							  1, argtypes, args, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			result = DatumGetInt64(d);
	}
	return result;
}

void
ingest_settings_load(IngestSettings *settings)
{
	int64		metrics;
	int64		logs;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	metrics = retention_us("metrics");
	logs = retention_us("debug_logs");
	SPI_finish();

	settings->metrics_retention_us = Max(metrics, 0);
	settings->logs_retention_us = Max(logs, 0);
}

/*
 * The receipt clock: the start of the statement that handed the payload in
 * (statement_timestamp()).  SPEC §4 makes created_at the time of receipt,
 * and a payload is received when its statement arrives: every event of one
 * payload gets the same time, a preview shows the very time an ingest()
 * in the same statement stores, and a payload sent late in a long
 * transaction is not stamped with the transaction's start.  The HTTP
 * workers run no SQL statement per request: each request is their
 * statement, its start set when its body is complete
 * (SetCurrentStatementStartTimestamp, as a worker marks each cycle).
 */
TimestampTz
ingest_receipt_time(void)
{
	return GetCurrentStatementStartTimestamp();
}

void
ingest_prepare(MapOptions *opts, const IngestSettings *settings,
			   const char *bound_entity, int64 body_bytes)
{
	IngestSettings loaded;

	if (settings == NULL)
	{
		ingest_settings_load(&loaded);
		settings = &loaded;
	}
	map_options_init(opts, ingest_receipt_time());
	opts->max_clock_skew_us = (int64) machpay_max_clock_skew_s * USECS_PER_SEC;
	if (settings->metrics_retention_us > 0)
		opts->metrics_retention_us = settings->metrics_retention_us;
	if (settings->logs_retention_us > 0)
		opts->logs_retention_us = settings->logs_retention_us;
	opts->bound_entity = bound_entity;
	opts->max_events = machpay_max_events_per_request;
	opts->max_rows = machpay_max_rows_per_request;
	opts->max_rejects = machpay_max_rejects_per_request;
	opts->max_rows_per_body_byte = machpay_max_rows_per_body_byte;
	opts->body_bytes = body_bytes;
}

BufferPutStatus
ingest_put(const MapResult *result, BufferTicket *ticket)
{
	BufferRows	rows;

	rows.data = result->rows.data;
	rows.len = result->rows.len;
	rows.nintents = result->nintents;
	memcpy(rows.nrows, result->nrows, sizeof(rows.nrows));
	memcpy(rows.events_by_source, result->events_by_source,
		   sizeof(rows.events_by_source));
	return buffer_put(&rows, ticket);
}

/*
 * One SQLSTATE and one wording per refusal, whichever SQL function the
 * payload came through: a bad payload (HTTP 400) is an invalid argument;
 * a payload past a cap (413 / 422) is a limit, named by its code word.
 */
void
ingest_raise_refusal(const MapResult *result)
{
	const char *msg = result->refusal_message ?
		result->refusal_message : "request refused";

	if (result->status == MAP_OK)
		return;
	if (result->status == MAP_BAD_REQUEST)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bad request: %s", msg),
				 errdetail("Nothing of a bad request is stored.")));
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s: %s", ingest_refusal_code(result->status), msg),
			 errdetail("Nothing of a refused request is stored.")));
}
