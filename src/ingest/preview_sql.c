/*-------------------------------------------------------------------------
 * preview_sql.c
 *	  machpay.ingest_preview(jsonb) and machpay.ingest_preview_text(text):
 *	  dry runs of the ingest path showing the rows an ingest would produce
 *	  and the per-event errors.
 *
 * The preview touches no table except reading machpay.retention_policies
 * (the settings of ingest_prepare, as every front end); DBAs use it to see
 * what a report becomes, the regression tests use it to check every
 * mapping rule without the writer.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "ingest/ingest.h"

PG_FUNCTION_INFO_V1(machpay_ingest_preview);
PG_FUNCTION_INFO_V1(machpay_ingest_preview_text);

static Datum
jsonb_from_text(const char *text)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
}

/* "key": "value" pairs of a JSON object under construction */
static void
add_string(StringInfo buf, const char *key, const char *val)
{
	if (buf->len > 1)
		appendStringInfoChar(buf, ',');
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
	escape_json(buf, val);
}

static void
add_raw(StringInfo buf, const char *key, const char *json)
{
	if (buf->len > 1)
		appendStringInfoChar(buf, ',');
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
	appendStringInfoString(buf, json);
}

static const char *const source_names[EVENT_SOURCE_COUNT] = {
	"gateway", "sdk", "payment_intent", "log"
};

enum
{
	COL_INDEX, COL_KIND, COL_TIME, COL_ENTITY, COL_NAME, COL_LABELS,
	COL_VALUE, COL_DETAIL, NCOLS
};

static void
put_error(ReturnSetInfo *rsinfo, const MapError *e)
{
	Datum		values[NCOLS] = {0};
	bool		nulls[NCOLS];
	StringInfoData detail;

	memset(nulls, true, sizeof(nulls));
	initStringInfo(&detail);
	appendStringInfoChar(&detail, '{');
	add_string(&detail, "code", map_error_code_name(e->code));
	add_string(&detail, "message", e->message);
	appendStringInfoChar(&detail, '}');

	values[COL_INDEX] = Int32GetDatum(e->index);
	nulls[COL_INDEX] = false;
	values[COL_KIND] = CStringGetTextDatum("error");
	nulls[COL_KIND] = false;
	values[COL_NAME] = CStringGetTextDatum(map_error_code_name(e->code));
	nulls[COL_NAME] = false;
	values[COL_DETAIL] = jsonb_from_text(detail.data);
	nulls[COL_DETAIL] = false;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

static void
put_row(ReturnSetInfo *rsinfo, const RowView *row)
{
	Datum		values[NCOLS] = {0};
	bool		nulls[NCOLS];
	StringInfoData detail;
	const char *kind = "unknown";

	memset(nulls, true, sizeof(nulls));
	initStringInfo(&detail);
	appendStringInfoChar(&detail, '{');

#define SET(col, datum) (values[(col)] = (datum), nulls[(col)] = false)

	switch (row->kind)
	{
		case ROW_METRIC:
			{
				const MetricRow *m = row->fixed;

				kind = "metric";
				SET(COL_TIME, TimestampTzGetDatum(m->time));
				SET(COL_ENTITY, CStringGetTextDatum(row->str[0]));
				SET(COL_NAME, CStringGetTextDatum(row->str[1]));
				SET(COL_LABELS, jsonb_from_text(row->str[2]));
				SET(COL_VALUE, Float8GetDatum(m->value));
				if (m->source >= 0 && m->source < EVENT_SOURCE_COUNT)
					add_string(&detail, "source", source_names[m->source]);
				break;
			}
		case ROW_LOG:
			{
				const LogRow *l = row->fixed;

				kind = "log";
				SET(COL_TIME, TimestampTzGetDatum(l->time));
				SET(COL_ENTITY, CStringGetTextDatum(row->str[0]));
				SET(COL_NAME, CStringGetTextDatum(row->str[1]));
				add_string(&detail, "message", row->str[2]);
				add_raw(&detail, "fields", row->len[3] > 0 ? row->str[3] : "null");
				break;
			}
		case ROW_INTENT:
			{
				const IntentRow *in = row->fixed;

				kind = "intent";
				SET(COL_TIME, TimestampTzGetDatum(in->received_at));
				SET(COL_ENTITY, CStringGetTextDatum(row->str[0]));
				add_string(&detail, "agent_id", row->str[1]);
				add_string(&detail, "token", row->str[2]);
				add_string(&detail, "signature", row->str[3]);
				add_raw(&detail, "nonce", row->str[4]);
				add_raw(&detail, "amount", row->str[5]);
				break;
			}
		case ROW_CONFIG:
			{
				const ConfigRow *c = row->fixed;

				kind = "config";
				SET(COL_TIME, TimestampTzGetDatum(c->period_end));
				SET(COL_ENTITY, CStringGetTextDatum(row->str[0]));
				if (c->present & CONFIG_HAS_PRICE)
					add_raw(&detail, "price_per_unit", row->str[1]);
				if (c->present & CONFIG_HAS_MINT)
					add_string(&detail, "accepted_mint", row->str[2]);
				if (c->present & CONFIG_HAS_WITHDRAWAL)
					add_string(&detail, "withdrawal_address", row->str[3]);
				if (c->present & CONFIG_HAS_VERSION)
					add_string(&detail, "version", row->str[4]);
				break;
			}
		case ROW_REJECT:
			{
				const RejectRow *r = row->fixed;

				kind = "reject";
				SET(COL_TIME, TimestampTzGetDatum(r->time));
				SET(COL_NAME, CStringGetTextDatum(row->str[0]));
				add_string(&detail, "message", row->str[1]);
				if (row->len[2] > 0)
					add_string(&detail, "remote_addr", row->str[2]);
				add_string(&detail, "excerpt", row->str[3]);
				break;
			}
	}
	appendStringInfoChar(&detail, '}');

	SET(COL_INDEX, Int32GetDatum(row->event_index));
	SET(COL_KIND, CStringGetTextDatum(kind));
	SET(COL_DETAIL, jsonb_from_text(detail.data));
#undef SET
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* The preview's rows: mapper rows in batch order, each error before its event's rows. */
static void
put_result(FunctionCallInfo fcinfo, MapResult *result)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RowReader	reader;
	RowView		row;
	int			next_error = 0;

	ingest_raise_refusal(result);

	rowbuf_reader_init(&reader, result->rows.data, result->rows.len);
	while (rowbuf_next(&reader, &row))
	{
		while (next_error < result->nerrors &&
			   result->errors[next_error].index <= row.event_index)
			put_error(rsinfo, &result->errors[next_error++]);
		put_row(rsinfo, &row);
	}
	while (next_error < result->nerrors)
		put_error(rsinfo, &result->errors[next_error++]);
}

static void
preview_options(FunctionCallInfo fcinfo, MapOptions *opts, int rejects_arg,
				int entity_arg)
{
	ingest_prepare(opts, NULL,
				   PG_ARGISNULL(entity_arg) ? NULL :
				   text_to_cstring(PG_GETARG_TEXT_PP(entity_arg)), 0);
	opts->max_errors_listed = INT_MAX;
	opts->record_rejects = PG_ARGISNULL(rejects_arg) ? false :
		PG_GETARG_BOOL(rejects_arg);
}

/*
 * machpay.ingest_preview(payload jsonb, include_rejects boolean DEFAULT
 * false, bound_entity text DEFAULT NULL): what machpay.ingest() would make
 * of payload.  One row per row the mapping would produce (dead-letter rows
 * only with include_rejects) and one per rejected event (kind 'error');
 * bound_entity acts as the entity of the caller's key.
 */
Datum
machpay_ingest_preview(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload = PG_GETARG_JSONB_P(0);
	MapOptions	opts;
	MapResult	result;

	InitMaterializedSRF(fcinfo, 0);
	preview_options(fcinfo, &opts, 1, 2);
	map_jsonb(payload, &opts, &result);
	put_result(fcinfo, &result);
	return (Datum) 0;
}

/*
 * machpay.ingest_preview_text(body text, ndjson boolean DEFAULT false,
 * include_rejects boolean DEFAULT false, bound_entity text DEFAULT NULL):
 * the same for a request body as HTTP receives it (JSON or NDJSON text),
 * through the request-text front end.
 */
Datum
machpay_ingest_preview_text(PG_FUNCTION_ARGS)
{
	text	   *body = PG_GETARG_TEXT_PP(0);
	bool		ndjson = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	MapOptions	opts;
	MapResult	result;

	InitMaterializedSRF(fcinfo, 0);
	preview_options(fcinfo, &opts, 2, 3);
	map_json_text(VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body), ndjson, &opts,
				  &result);
	put_result(fcinfo, &result);
	return (Datum) 0;
}
