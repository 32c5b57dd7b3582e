/*-------------------------------------------------------------------------
 * devstubs.c
 *	  Weak stand-ins for the mapper and writer APIs (mapper.h, writer.h)
 *	  so the buffer and flusher build and run before those land.
 *
 * Every symbol here is weak: once mapper.c and writer.c are linked, their
 * definitions win and these are ignored.  Delete this file after both are
 * merged.  The stand-ins understand only `log` and `payment_intent`
 * events, without validation, and write them through SPI.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "mapper.h"
#include "writer.h"

#define WEAK __attribute__((weak))

WEAK void
map_options_init(MapOptions *opts, TimestampTz now)
{
	memset(opts, 0, sizeof(*opts));
	opts->now = now;
	opts->max_depth = 64;
	opts->max_rows_per_event = 10000;
	opts->max_label_bytes = 256;
	opts->max_errors_listed = 100;
}

static char *
stub_field(JsonbContainer *c, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(c, JB_FOBJECT, &k);
	if (v == NULL)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	return NULL;
}

static void
stub_event(JsonbContainer *c, int index, const MapOptions *opts, MapResult *result)
{
	char	   *source = stub_field(c, "source");
	const char *s[8];
	uint32		l[8];
	int			n = 0;

	if (source && strcmp(source, "log") == 0)
	{
		LogRow		row;
		char	   *t = stub_field(c, "time");

		s[n++] = stub_field(c, "entity_id");
		s[n++] = stub_field(c, "level");
		s[n++] = stub_field(c, "message");
		s[n++] = "";
		row.time = t ? (TimestampTz) ((strtod(t, NULL) - 946684800.0) * 1000000.0) : opts->now;
		for (int i = 0; i < n; i++)
		{
			if (s[i] == NULL)
				s[i] = "";
			l[i] = strlen(s[i]);
		}
		rowbuf_append(&result->rows, ROW_LOG, index, &row, sizeof(row), n, s, l);
		result->nrows[ROW_LOG]++;
		result->events_by_source[SOURCE_LOG]++;
	}
	else if (source && strcmp(source, "payment_intent") == 0)
	{
		IntentRow	row;
		const char *keys[] = {"gateway_id", "agent_id", "token", "signature", "nonce", "amount"};

		for (int i = 0; i < 6; i++)
		{
			s[n] = stub_field(c, keys[i]);
			if (s[n] == NULL)
				s[n] = "0";
			l[n] = strlen(s[n]);
			n++;
		}
		row.received_at = opts->now;
		rowbuf_append(&result->rows, ROW_INTENT, index, &row, sizeof(row), n, s, l);
		result->nrows[ROW_INTENT]++;
		result->nintents++;
		result->events_by_source[SOURCE_PAYMENT_INTENT]++;
	}
	else
	{
		result->rejected++;
		return;
	}
	result->accepted++;
}

WEAK void
map_jsonb(Jsonb *payload, const MapOptions *opts, MapResult *result)
{
	memset(result, 0, sizeof(*result));
	initStringInfo(&result->rows);
	result->status = MAP_OK;
	if (JB_ROOT_IS_ARRAY(payload) && !JB_ROOT_IS_SCALAR(payload))
	{
		JsonbIterator *it = JsonbIteratorInit(&payload->root);
		JsonbValue	v;
		JsonbIteratorToken tok;
		int			index = 0;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok != WJB_ELEM)
				continue;
			if (v.type == jbvBinary)
				stub_event(v.val.binary.data, index, opts, result);
			else
				result->rejected++;
			index++;
		}
	}
	else if (JB_ROOT_IS_OBJECT(payload))
		stub_event(&payload->root, 0, opts, result);
	else
	{
		result->status = MAP_BAD_REQUEST;
		result->bad_request_message = "not an object or array";
	}
}

WEAK void
map_response_json(StringInfo out, const MapResult *result,
				  const IntentOutcome *intents, int nintents)
{
	appendStringInfo(out, "{\"accepted\":%d,\"rejected\":%d,\"errors\":[]",
					 result->accepted, result->rejected);
	if (intents)
	{
		appendStringInfoString(out, ",\"intents\":[");
		for (int i = 0; i < nintents; i++)
		{
			pg_uuid_t	u;

			memcpy(u.data, intents[i].id, 16);
			appendStringInfo(out, "%s{\"index\":%d,\"id\":\"%s\",\"duplicate\":%s}",
							 i ? "," : "", intents[i].event_index,
							 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&u))),
							 intents[i].duplicate ? "true" : "false");
		}
		appendStringInfoChar(out, ']');
	}
	appendStringInfoChar(out, '}');
}

WEAK void
writer_write_batch(const char *rows, Size len, WriteResult *result)
{
	RowReader	reader;
	RowView		row;
	int			nintents = 0;
	int			i = 0;

	rowbuf_reader_init(&reader, rows, len);
	while (rowbuf_next(&reader, &row))
		if (row.kind == ROW_INTENT)
			nintents++;
	result->intents = palloc0(sizeof(IntentOutcome) * Max(nintents, 1));
	result->nintents = nintents;

	SPI_connect();
	rowbuf_reader_init(&reader, rows, len);
	while (rowbuf_next(&reader, &row))
	{
		if (row.kind == ROW_LOG)
		{
			Oid			types[4] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID};
			Datum		vals[4];

			vals[0] = TimestampTzGetDatum(((const LogRow *) row.fixed)->time);
			for (int k = 0; k < 3; k++)
				vals[k + 1] = CStringGetTextDatum(row.str[k]);
			SPI_execute_with_args("INSERT INTO machpay.debug_logs(time, entity_id, level, message) VALUES ($1, $2, $3, $4)",
								  4, types, vals, NULL, false, 0);
			result->nrows[ROW_LOG]++;
		}
		else if (row.kind == ROW_INTENT)
		{
			Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
			Datum		vals[7];
			bool		isnull;
			Datum		d;
			IntentOutcome *o = &result->intents[i++];

			for (int k = 0; k < 6; k++)
				vals[k] = CStringGetTextDatum(row.str[k]);
			vals[6] = TimestampTzGetDatum(((const IntentRow *) row.fixed)->received_at);
			SPI_execute_with_args("WITH k AS (INSERT INTO machpay.payment_intent_keys VALUES ($1, $2, $5::numeric, gen_random_uuid(), $7) "
								  "ON CONFLICT DO NOTHING RETURNING id, created_at), "
								  "i AS (INSERT INTO machpay.payment_intents(id, gateway_id, agent_id, nonce, amount, token, signature, created_at) "
								  "SELECT id, $1, $2, $5::numeric, $6::numeric, $3, $4, created_at FROM k RETURNING id) "
								  "SELECT id, false FROM i UNION ALL "
								  "SELECT id, true FROM machpay.payment_intent_keys WHERE gateway_id = $1 AND agent_id = $2 AND nonce = $5::numeric AND NOT EXISTS (SELECT 1 FROM k)",
								  7, types, vals, NULL, false, 0);
			o->event_index = row.event_index;
			if (SPI_processed > 0)
			{
				d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
				memcpy(o->id, DatumGetUUIDP(d)->data, 16);
				o->duplicate = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
				if (!o->duplicate)
					result->nrows[ROW_INTENT]++;
			}
		}
	}
	SPI_finish();
}

WEAK void
writer_notify_ingest(const WriteResult *result, const char *origin)
{
}
