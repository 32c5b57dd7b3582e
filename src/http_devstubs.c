/*-------------------------------------------------------------------------
 * http_devstubs.c
 *	  Weak stand-ins for the mapper and buffer APIs, so the ingest server
 *	  links and runs before mapper.c and buffer.c land.  The real (strong)
 *	  definitions replace them at link time; delete this file once both
 *	  are merged.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "buffer.h"
#include "mapper.h"

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

WEAK void
map_json_text(const char *body, size_t len, bool ndjson,
			  const MapOptions *opts, MapResult *result)
{
	memset(result, 0, sizeof(*result));
	initStringInfo(&result->rows);
	while (len > 0 && (*body == ' ' || *body == '\n'))
		body++, len--;
	if (len == 0 || (*body != '{' && *body != '['))
	{
		result->status = MAP_BAD_REQUEST;
		result->bad_request_message = "not JSON";
		return;
	}
	if (memmem(body, len, "\"bogus\"", 7) != NULL)
	{
		result->rejected = 1;
		result->nerrors = 1;
		result->errors = palloc0(sizeof(MapError));
		result->errors[0].code = MAP_ERR_UNKNOWN_SOURCE;
		result->errors[0].message = "unknown source";
		return;
	}
	result->accepted = 1;
	if (memmem(body, len, "payment_intent", 14) != NULL)
		result->nintents = 1;
	appendStringInfoString(&result->rows, "xxxxxxx");
}

WEAK void
map_response_json(StringInfo out, const MapResult *result,
				  const IntentOutcome *intents, int nintents)
{
	appendStringInfo(out, "{\"accepted\":%d,\"rejected\":%d,\"errors\":[]", result->accepted,
					 result->rejected);
	if (intents)
		appendStringInfo(out, ",\"intents\":[{\"index\":0,\"id\":\"00000000-0000-0000-0000-000000000000\",\"duplicate\":false}]");
	appendStringInfoChar(out, '}');
}

WEAK bool
buffer_has_room(Size bytes)
{
	return bytes < 1024 * 1024;
}

WEAK BufferPutStatus
buffer_put(const MapResult *result, BufferTicket *ticket)
{
	return BUFFER_PUT_OK;
}

WEAK TicketState
buffer_ticket_poll(const BufferTicket *ticket, IntentOutcome *outcomes, int noutcomes)
{
	return TICKET_COMMITTED;
}

WEAK void
buffer_ticket_release(const BufferTicket *ticket)
{
}

WEAK Size
buffer_bytes_used(void)
{
	return 0;
}

WEAK Size
buffer_capacity(void)
{
	return 0;
}

WEAK int
buffer_intents_waiting(void)
{
	return 0;
}
