/*-------------------------------------------------------------------------
 * ingest_response.c
 *	  The answer to an ingest (SPEC §4), one builder for every front end:
 *	  the HTTP server's 202/200/422 and refusal bodies, and the jsonb that
 *	  machpay.ingest() and machpay.buffer_ingest() return.
 *
 * No database access and no ereport: it compiles as frontend code and the
 * mapper's fuzz harness builds the answer of every input it maps.
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include "ingest/ingest_response.h"

/* [{"index":i,"code":"...","message":"..."}, ...] */
static void
errors_json(StringInfo out, const MapResult *result)
{
	appendStringInfoChar(out, '[');
	for (int i = 0; i < result->nerrors; i++)
	{
		const MapError *e = &result->errors[i];

		if (i > 0)
			appendStringInfoChar(out, ',');
		appendStringInfo(out, "{\"index\":%d,\"code\":\"%s\",\"message\":",
						 e->index, map_error_code_name(e->code));
		map_json_string(out, e->message, strlen(e->message));
		appendStringInfoChar(out, '}');
	}
	appendStringInfoChar(out, ']');
}

const char *
ingest_refusal_code(MapStatus status)
{
	switch (status)
	{
		case MAP_OK:
			break;
		case MAP_BAD_REQUEST:
			return "bad_request";
		case MAP_TOO_LARGE:
			return "too_large";
		case MAP_TOO_MANY_REJECTS:
			return "too_many_rejects";
	}
	return "ok";
}

int
ingest_refusal_http_status(MapStatus status)
{
	switch (status)
	{
		case MAP_OK:
			break;
		case MAP_BAD_REQUEST:
			return 400;
		case MAP_TOO_LARGE:
			return 413;
		case MAP_TOO_MANY_REJECTS:
			return 422;
	}
	return 200;
}

/*
 * A refused request: {"error":...,"message":...}, plus the counts and the
 * listed errors when too many events were rejected (they say what is wrong).
 */
static void
refusal_json(StringInfo out, const MapResult *result)
{
	const char *msg = result->refusal_message ?
		result->refusal_message : "request refused";

	appendStringInfo(out, "{\"error\":\"%s\",\"message\":",
					 ingest_refusal_code(result->status));
	map_json_string(out, msg, strlen(msg));
	if (result->status == MAP_TOO_MANY_REJECTS)
	{
		appendStringInfo(out, ",\"accepted\":0,\"rejected\":%d,\"errors\":",
						 result->rejected);
		errors_json(out, result);
	}
	appendStringInfoChar(out, '}');
}

void
ingest_response_json(StringInfo out, const MapResult *result,
				  const IntentOutcome *intents, int nintents)
{
	if (result->status != MAP_OK)
	{
		refusal_json(out, result);
		return;
	}

	appendStringInfo(out, "{\"accepted\":%d,\"rejected\":%d,\"errors\":",
					 result->accepted, result->rejected);
	errors_json(out, result);
	if (intents != NULL)
	{
		appendStringInfoString(out, ",\"intents\":[");
		for (int i = 0; i < nintents; i++)
		{
			const unsigned char *u = intents[i].id;

			if (i > 0)
				appendStringInfoChar(out, ',');
			appendStringInfo(out, "{\"index\":%d,\"id\":\"", intents[i].event_index);
			for (int b = 0; b < 16; b++)
			{
				if (b == 4 || b == 6 || b == 8 || b == 10)
					appendStringInfoChar(out, '-');
				appendStringInfo(out, "%02x", u[b]);
			}
			appendStringInfo(out, "\",\"duplicate\":%s}",
							 intents[i].duplicate ? "true" : "false");
		}
		appendStringInfoChar(out, ']');
	}
	appendStringInfoChar(out, '}');
}
