/*-------------------------------------------------------------------------
 * writer.c
 *	  The bulk writer (writer.h): a row batch into the tables, inside the
 *	  caller's transaction.
 *
 * The batch is walked once per kind of row, in a fixed order: metric rows
 * (series ids from series_cache.c, points through bulk_insert.c, then the
 * rollup invalidation marks of their hours), log rows and dead letters
 * (bulk_insert.c), payment intents (intents.c), config reports
 * (vendor_config.c).  Notifications are queued with machpay_notify
 * (notify/notify.c, signed) and go out at commit, or not at all; counters move at commit (xact_stats.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "flusher/bulk_insert.h"
#include "common/machpay.h"
#include "notify/notify.h"
#include "flusher/series_cache.h"
#include "flusher/xact_stats.h"
#include "flusher/writer.h"
#include "flusher/writer_parts.h"

/*
 * Hours are marked in SQL with date_trunc('hour', time), which follows the
 * session time zone.  Every zone's offset is a multiple of 15 minutes, so
 * times cut to the quarter hour keep their hour in any zone: we dedupe on
 * that in C and let SQL do the rest.
 */
#define QUARTER_HOUR_USECS	(INT64CONST(15) * 60 * USECS_PER_SEC)

static const char *const source_names[EVENT_SOURCE_COUNT] = {
	[SOURCE_GATEWAY] = "gateway",
	[SOURCE_SDK] = "sdk",
	[SOURCE_PAYMENT_INTENT] = "payment_intent",
	[SOURCE_LOG] = "log",
};

void
writer_append_json_time(StringInfo buf, TimestampTz ts)
{
	char		tbuf[MAXDATELEN + 1];
	int			utc = 0;

	appendStringInfoChar(buf, '"');
	appendStringInfoString(buf, JsonEncodeDateTime(tbuf, TimestampTzGetDatum(ts),
												   TIMESTAMPTZOID, &utc));
	appendStringInfoChar(buf, '"');
}

static Datum
text_datum(const RowView *row, int i)
{
	return PointerGetDatum(cstring_to_text_with_len(row->str[i], row->len[i]));
}

static int
ts_cmp(const void *a, const void *b)
{
	TimestampTz x = *(const TimestampTz *) a;
	TimestampTz y = *(const TimestampTz *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/* A point to insert, with the event it came from (for error context). */
typedef struct PointToInsert
{
	int64		series_id;
	TimestampTz time;
	double		value;
	int32		event_index;
} PointToInsert;

/*
 * Points go in sorted by the btree's key (series_id, time): consecutive
 * insertions then descend to the same leaf pages, which stay hot in the
 * CPU caches, instead of one random leaf per point.
 */
static int
point_cmp(const void *a, const void *b)
{
	const PointToInsert *x = a;
	const PointToInsert *y = b;

	if (x->series_id != y->series_id)
		return x->series_id < y->series_id ? -1 : 1;
	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	return 0;
}

/* Telemetry notification: one per event's run of metric rows. */
static void
notify_telemetry(int32 source, const char *entity_id, TimestampTz time, int64 nrows)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\":");
	escape_json(&buf, (source >= 0 && source < EVENT_SOURCE_COUNT)
				? source_names[source] : "gateway");
	appendStringInfoString(&buf, ",\"entity_id\":");
	escape_json(&buf, entity_id);
	appendStringInfoString(&buf, ",\"time\":");
	writer_append_json_time(&buf, time);
	appendStringInfo(&buf, ",\"rows\":" INT64_FORMAT "}", nrows);
	/* A base58 id, a timestamp and a count: always small. */
	(void) machpay_notify(buf.data, buf.len, NULL);
	pfree(buf.data);
}

static void
mark_rollup_hours(TimestampTz *quarters, int n)
{
	Datum	   *elems;
	int			m = 0;
	Datum		arg;
	Oid			argtype = TIMESTAMPTZARRAYOID;
	int			rc;

	qsort(quarters, n, sizeof(TimestampTz), ts_cmp);
	elems = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		if (i == 0 || quarters[i] != quarters[i - 1])
			elems[m++] = TimestampTzGetDatum(quarters[i]);
	arg = PointerGetDatum(construct_array(elems, m, TIMESTAMPTZOID, sizeof(TimestampTz),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	/* Sorted: concurrent writers lock the marks in the same order. */
	rc = SPI_execute_with_args("INSERT INTO machpay.rollup_invalidations AS r (bucket)"
							   " SELECT DISTINCT date_trunc('hour', t) FROM unnest($1::timestamptz[]) t"
							   " ORDER BY 1"
							   " ON CONFLICT (bucket) DO UPDATE"
							   "   SET version = r.version + 1, marked_at = now()",
							   1, &argtype, &arg, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "marking rollup hours failed: %s", SPI_result_code_string(rc));
}

/*
 * Rows of new series refused by machpay.max_series_per_entity
 * (series_cache.c), by entity: counted, and one dead letter per entity
 * and batch in machpay.ingest_rejects (reason too_many_series).
 */
#define REFUSED_ENTITIES_MAX 100

typedef struct RefusedRows
{
	int			nentities;
	const char *entity[REFUSED_ENTITIES_MAX];
	int64		rows[REFUSED_ENTITIES_MAX];
	int64		total;
} RefusedRows;

static void
note_refused(RefusedRows *rr, const char *entity)
{
	int			i;

	rr->total++;
	for (i = 0; i < rr->nentities; i++)
		if (strcmp(rr->entity[i], entity) == 0)
			break;
	if (i == rr->nentities)
	{
		if (rr->nentities == REFUSED_ENTITIES_MAX)
			return;				/* counted, not listed */
		rr->entity[rr->nentities++] = entity;
		rr->rows[i] = 0;
	}
	rr->rows[i]++;
}

static void
record_refused(const RefusedRows *rr)
{
	Datum	   *ents;
	Datum	   *rows;
	Datum		args[3];
	Oid			argtypes[3] = {TEXTARRAYOID, INT8ARRAYOID, INT4OID};
	int			rc;

	if (rr->total == 0)
		return;
	xact_stats_add(STAT_ROWS_SERIES_LIMIT, rr->total);
	ents = palloc(sizeof(Datum) * Max(rr->nentities, 1));
	rows = palloc(sizeof(Datum) * Max(rr->nentities, 1));
	for (int i = 0; i < rr->nentities; i++)
	{
		ents[i] = CStringGetTextDatum(rr->entity[i]);
		rows[i] = Int64GetDatum(rr->rows[i]);
	}
	args[0] = PointerGetDatum(construct_array(ents, rr->nentities, TEXTOID, -1, false, TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(rows, rr->nentities, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = Int32GetDatum(machpay_max_series_per_entity);
	rc = SPI_execute_with_args("INSERT INTO machpay.ingest_rejects (time, reason, message, excerpt)"
							   " SELECT now(), 'too_many_series',"
							   "        n || ' metric rows of new series dropped: the entity has reached"
							   " machpay.max_series_per_entity (' || $3 || ')', e"
							   "   FROM unnest($1, $2) AS t(e, n)",
							   3, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "recording refused series failed: %s", SPI_result_code_string(rc));
	xact_stats_add(STAT_ROWS_INGEST_REJECTS, rr->nentities);
}

static void
write_metrics(const char *rows, Size len, int64 nmetric, WriteResult *result)
{
	RowReader	rd;
	RowView		row;
	SeriesEntry **entries = palloc(sizeof(SeriesEntry *) * nmetric);
	PointToInsert *points = palloc(sizeof(PointToInsert) * nmetric);
	TimestampTz *quarters = palloc(sizeof(TimestampTz) * nmetric);
	int64		i = 0;
	int64		npoints = 0;
	int			nquarters = 0;
	BulkTarget *bt;
	AttrNumber	a_time,
				a_series,
				a_value;
	RefusedRows refused;

	memset(&refused, 0, sizeof(refused));
	series_cache_begin_batch();
	rowbuf_reader_init(&rd, rows, len);
	while (rowbuf_next(&rd, &row))
	{
		if (row.kind != ROW_METRIC)
			continue;
		if (row.nstrings < 3)
			elog(ERROR, "malformed metric row in batch");
		entries[i++] = series_cache_lookup(row.str[0], row.len[0], row.str[1], row.len[1],
										   row.str[2], row.len[2]);
	}
	series_cache_resolve();

	bt = bulk_target_open("metric_points");
	a_time = bulk_target_attnum(bt, "time");
	a_series = bulk_target_attnum(bt, "series_id");
	a_value = bulk_target_attnum(bt, "value");

	{
		/* The current telemetry notification run. */
		int32		run_event = -1;
		int32		run_source = 0;
		const char *run_entity = NULL;
		TimestampTz run_time = 0;
		int64		run_rows = 0;

		i = 0;
		npoints = 0;
		rowbuf_reader_init(&rd, rows, len);
		while (rowbuf_next(&rd, &row))
		{
			MetricRow	m;
			TimestampTz q;

			if (row.kind != ROW_METRIC)
				continue;
			if (series_entry_id(entries[i]) == SERIES_REFUSED)
			{
				note_refused(&refused, row.str[0]);
				i++;
				continue;
			}
			memcpy(&m, row.fixed, sizeof(MetricRow));
			points[npoints].series_id = series_entry_id(entries[i]);
			points[npoints].time = m.time;
			points[npoints].value = m.value;
			points[npoints].event_index = row.event_index;
			npoints++;

			q = m.time - (m.time % QUARTER_HOUR_USECS);
			if (m.time < 0 && q != m.time)
				q -= QUARTER_HOUR_USECS;
			/* Rows come in runs of one time: keep a value per run only. */
			if (nquarters == 0 || quarters[nquarters - 1] != q)
				quarters[nquarters++] = q;
			i++;

			if (machpay_notify_telemetry)
			{
				if (run_entity == NULL || run_event != row.event_index ||
					run_time != m.time || run_source != m.source ||
					strcmp(run_entity, row.str[0]) != 0)
				{
					if (run_entity != NULL)
						notify_telemetry(run_source, run_entity, run_time, run_rows);
					run_entity = row.str[0];
					run_event = row.event_index;
					run_time = m.time;
					run_source = m.source;
					run_rows = 0;
				}
				run_rows++;
			}
		}
		if (run_entity != NULL)
			notify_telemetry(run_source, run_entity, run_time, run_rows);
	}

	/* Refused rows took an entry but no point: sort only the points. */
	qsort(points, npoints, sizeof(PointToInsert), point_cmp);
	for (int64 k = 0; k < npoints; k++)
	{
		TupleTableSlot *slot = bulk_target_slot(bt);

		slot->tts_values[a_time - 1] = TimestampTzGetDatum(points[k].time);
		slot->tts_isnull[a_time - 1] = false;
		slot->tts_values[a_series - 1] = Int64GetDatum(points[k].series_id);
		slot->tts_isnull[a_series - 1] = false;
		slot->tts_values[a_value - 1] = Float8GetDatum(points[k].value);
		slot->tts_isnull[a_value - 1] = false;
		bulk_target_put(bt, points[k].event_index);
	}
	result->nrows[ROW_METRIC] += bulk_target_finish(bt);
	if (nquarters > 0)
		mark_rollup_hours(quarters, nquarters);
	record_refused(&refused);
}

/* debug_logs and ingest_rejects: every column from the row's strings. */
static void
write_simple(const char *rows, Size len, RowKind kind, WriteResult *result)
{
	RowReader	rd;
	RowView		row;
	BulkTarget *bt;
	MemoryContext rowcxt;
	MemoryContext oldcxt;
	AttrNumber	att[5];

	bt = bulk_target_open(kind == ROW_LOG ? "debug_logs" : "ingest_rejects");
	att[0] = bulk_target_attnum(bt, "time");
	if (kind == ROW_LOG)
	{
		att[1] = bulk_target_attnum(bt, "entity_id");
		att[2] = bulk_target_attnum(bt, "level");
		att[3] = bulk_target_attnum(bt, "message");
		att[4] = bulk_target_attnum(bt, "fields");
	}
	else
	{
		att[1] = bulk_target_attnum(bt, "reason");
		att[2] = bulk_target_attnum(bt, "message");
		att[3] = bulk_target_attnum(bt, "remote_addr");
		att[4] = bulk_target_attnum(bt, "excerpt");
	}
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "machpay writer row",
								   ALLOCSET_SMALL_SIZES);

	rowbuf_reader_init(&rd, rows, len);
	while (rowbuf_next(&rd, &row))
	{
		TupleTableSlot *slot;
		TimestampTz t;

		if (row.kind != kind)
			continue;
		if (row.nstrings < 4)
			elog(ERROR, "malformed row in batch: kind %d with %d strings", kind, row.nstrings);
		/* LogRow and RejectRow are both a lone timestamp. */
		memcpy(&t, row.fixed, sizeof(TimestampTz));
		oldcxt = MemoryContextSwitchTo(rowcxt);
		slot = bulk_target_slot(bt);
		slot->tts_values[att[0] - 1] = TimestampTzGetDatum(t);
		slot->tts_isnull[att[0] - 1] = false;
		for (int s = 0; s < 4; s++)
		{
			int			a = att[s + 1] - 1;

			/* Empty log fields and remote address mean "none". */
			if (row.len[s] == 0 && ((kind == ROW_LOG && s == 3) ||
									(kind == ROW_REJECT && s == 2)))
				continue;
			if (kind == ROW_LOG && s == 3)
				slot->tts_values[a] = DirectFunctionCall1(jsonb_in,
														  CStringGetDatum(row.str[s]));
			else
				slot->tts_values[a] = text_datum(&row, s);
			slot->tts_isnull[a] = false;
		}
		bulk_target_put(bt, row.event_index);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(rowcxt);
	}
	result->nrows[kind] += bulk_target_finish(bt);
	MemoryContextDelete(rowcxt);
}

static void
write_intents(const char *rows, Size len, int n, WriteResult *result,
			  MemoryContext resultcxt)
{
	RowReader	rd;
	RowView		row;
	IntentInput *in = palloc(sizeof(IntentInput) * n);
	int			i = 0;
	int64		ndup = 0;

	rowbuf_reader_init(&rd, rows, len);
	while (rowbuf_next(&rd, &row))
	{
		IntentRow	r;

		if (row.kind != ROW_INTENT)
			continue;
		if (row.nstrings < 6)
			elog(ERROR, "malformed intent row in batch");
		memcpy(&r, row.fixed, sizeof(IntentRow));
		in[i].event_index = row.event_index;
		in[i].received_at = r.received_at;
		in[i].gateway_id = row.str[0];
		in[i].agent_id = row.str[1];
		in[i].token = row.str[2];
		in[i].signature = row.str[3];
		in[i].nonce = row.str[4];
		in[i].amount = row.str[5];
		i++;
	}
	result->intents = MemoryContextAllocZero(resultcxt, sizeof(IntentOutcome) * n);
	result->nintents = n;
	result->nrows[ROW_INTENT] += intents_store(in, n, result->intents, &ndup);
	xact_stats_add(STAT_INTENTS_DUPLICATE, ndup);
}

static void
write_config(const char *rows, Size len, int n, WriteResult *result)
{
	RowReader	rd;
	RowView		row;
	ConfigInput *in = palloc(sizeof(ConfigInput) * n);
	int			i = 0;
	int32		pos = 0;

	rowbuf_reader_init(&rd, rows, len);
	while (rowbuf_next(&rd, &row))
	{
		ConfigRow	c;

		pos++;
		if (row.kind != ROW_CONFIG)
			continue;
		if (row.nstrings < 5)
			elog(ERROR, "malformed config row in batch");
		memcpy(&c, row.fixed, sizeof(ConfigRow));
		in[i].batch_pos = pos;
		in[i].period_end = c.period_end;
		in[i].present = c.present;
		in[i].gateway_id = row.str[0];
		in[i].price = row.str[1];
		in[i].mint = row.str[2];
		in[i].withdrawal = row.str[3];
		in[i].version = row.str[4];
		i++;
	}
	vendor_config_apply(in, n, result);
}

/*
 * A transaction that stores payment intents commits durably, whatever
 * synchronous_commit the server, database or role set: its caller answers
 * 200 once the commit returns (the flusher), or the caller's own commit is
 * the acknowledgement (machpay.ingest()).  "off" and "local" become "on"
 * for this transaction only (SET LOCAL), so with a synchronous standby the
 * intent is on it too; remote_write and remote_apply are kept.
 */
static void
require_durable_commit(void)
{
	if (synchronous_commit >= SYNCHRONOUS_COMMIT_REMOTE_WRITE)
		return;
	(void) set_config_option("synchronous_commit", "on", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

void
writer_write_batch(const char *rows, Size len, WriteResult *result)
{
	MemoryContext callercxt = CurrentMemoryContext;
	MemoryContext batchcxt;
	int64		count[ROW_KIND_MAX + 1] = {0};
	RowReader	rd;
	RowView		row;

	/*
	 * The multi-insert path bypasses the executor's read-only check (done
	 * in ExecutorStart), so do it here: no heap write in a read-only
	 * transaction, none on a standby.
	 */
	PreventCommandIfReadOnly("machpay writer");
	PreventCommandIfParallelMode("machpay writer");
	PreventCommandDuringRecovery("machpay writer");

	/* Everything but events_by_source, which the caller fills. */
	memset(result->nrows, 0, sizeof(result->nrows));
	result->config_changed = 0;
	result->config_unknown_gateway = 0;
	result->config_stale = 0;
	result->nintents = 0;
	result->intents = NULL;

	rowbuf_reader_init(&rd, rows, len);
	while (rowbuf_next(&rd, &row))
	{
		if (row.kind < ROW_METRIC || row.kind > ROW_KIND_MAX)
			elog(ERROR, "unknown row kind %d in batch", (int) row.kind);
		count[row.kind]++;
	}
	if (count[ROW_INTENT] > INT_MAX / (int) sizeof(IntentOutcome))
		elog(ERROR, "too many payment intents in one batch");
	if (count[ROW_METRIC] + count[ROW_LOG] + count[ROW_INTENT] +
		count[ROW_CONFIG] + count[ROW_REJECT] == 0)
		return;

	batchcxt = AllocSetContextCreate(callercxt, "machpay writer batch",
									 ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(batchcxt);

	if (count[ROW_METRIC] > 0)
		write_metrics(rows, len, count[ROW_METRIC], result);
	if (count[ROW_LOG] > 0)
		write_simple(rows, len, ROW_LOG, result);
	if (count[ROW_REJECT] > 0)
		write_simple(rows, len, ROW_REJECT, result);
	if (count[ROW_INTENT] > 0)
	{
		write_intents(rows, len, (int) count[ROW_INTENT], result, callercxt);
		require_durable_commit();
	}
	if (count[ROW_CONFIG] > 0)
		write_config(rows, len, (int) count[ROW_CONFIG], result);

	xact_stats_add(STAT_ROWS_METRICS, result->nrows[ROW_METRIC]);
	xact_stats_add(STAT_ROWS_DEBUG_LOGS, result->nrows[ROW_LOG]);
	xact_stats_add(STAT_ROWS_PAYMENT_INTENTS, result->nrows[ROW_INTENT]);
	xact_stats_add(STAT_ROWS_INGEST_REJECTS, result->nrows[ROW_REJECT]);

	SPI_finish();
	MemoryContextSwitchTo(callercxt);
	MemoryContextDelete(batchcxt);
}

/*
 * Counts only: a fixed shape of at most a few hundred bytes, far below
 * NOTIFY's limit.
 */
void
writer_notify_ingest(const WriteResult *result, const char *origin)
{
	StringInfoData buf;
	int64		ndup = 0;

	for (int i = 0; i < result->nintents; i++)
		if (result->intents[i].duplicate)
			ndup++;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\":\"ingest\",\"origin\":");
	escape_json(&buf, origin ? origin : "");
	appendStringInfo(&buf,
					 ",\"rows\":{\"metrics\":" INT64_FORMAT ",\"debug_logs\":" INT64_FORMAT
					 ",\"payment_intents\":" INT64_FORMAT ",\"ingest_rejects\":" INT64_FORMAT "}",
					 result->nrows[ROW_METRIC], result->nrows[ROW_LOG],
					 result->nrows[ROW_INTENT], result->nrows[ROW_REJECT]);
	appendStringInfo(&buf,
					 ",\"events\":{\"gateway\":" INT64_FORMAT ",\"sdk\":" INT64_FORMAT
					 ",\"payment_intent\":" INT64_FORMAT ",\"log\":" INT64_FORMAT "}",
					 result->events_by_source[SOURCE_GATEWAY],
					 result->events_by_source[SOURCE_SDK],
					 result->events_by_source[SOURCE_PAYMENT_INTENT],
					 result->events_by_source[SOURCE_LOG]);
	appendStringInfo(&buf, ",\"intents_duplicate\":" INT64_FORMAT "}", ndup);
	(void) machpay_notify(buf.data, buf.len, "ingest");
	pfree(buf.data);
}
