/*-------------------------------------------------------------------------
 * sse_events.c
 *	  The relay's replay window and the payload protocol of machpay_events.
 *
 * Each complete payload becomes an *event* with the next *seq* and its SSE
 * wire text, formatted once and shared by every client.  The *window* keeps
 * the latest SSE_WINDOW_EVENTS events (and at most SSE_WINDOW_MAX_BYTES) for
 * Last-Event-ID replay.  Payloads over NOTIFY's limit arrive as *parts*
 * ({"type","part","parts","ref","chunk"}, see schema/60_sse.sql) and are
 * reassembled here before they get a seq.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"

#include "sse/sse.h"

/* Parts of at most this many payloads are assembled at once. */
#define SSE_MAX_ASSEMBLIES	16

typedef struct PayloadFields
{
	int			depth;
	const char *field;			/* top-level field being parsed, or NULL */
	char	   *type;
	char	   *entity_id;
	char	   *gateway_id;
	char	   *agent_id;
	char	   *ref;
	char	   *chunk;
	int64		part;
	int64		parts;
} PayloadFields;

typedef struct Assembly
{
	char	   *ref;
	int64		parts;
	int64		received;		/* parts 1..received are in buf */
	StringInfoData buf;
} Assembly;

static MemoryContext window_cxt = NULL;
static SseEvent *window[SSE_WINDOW_EVENTS];
static uint64 window_first;		/* oldest seq held */
static uint64 window_next;		/* seq of the next event */
static uint64 window_end_offset;	/* total wire bytes ever appended */
static uint64 window_bytes;		/* wire bytes held */
static int64 events_relayed = 0;
static Assembly assemblies[SSE_MAX_ASSEMBLIES];

void
sse_window_init(uint64 first_seq)
{
	window_cxt = AllocSetContextCreate(TopMemoryContext, "machpay sse window",
									   ALLOCSET_DEFAULT_SIZES);
	memset(window, 0, sizeof(window));
	memset(assemblies, 0, sizeof(assemblies));
	window_first = window_next = first_seq;
	window_end_offset = window_bytes = 0;
}

uint64
sse_window_first_seq(void)
{
	return window_first;
}

uint64
sse_window_next_seq(void)
{
	return window_next;
}

uint64
sse_window_end_offset(void)
{
	return window_end_offset;
}

int64
sse_events_relayed(void)
{
	return events_relayed;
}

SseEvent *
sse_window_get(uint64 seq)
{
	if (seq < window_first || seq >= window_next)
		return NULL;
	return window[seq % SSE_WINDOW_EVENTS];
}

static void
window_evict_oldest(void)
{
	SseEvent   *ev = window[window_first % SSE_WINDOW_EVENTS];

	window[window_first % SSE_WINDOW_EVENTS] = NULL;
	window_first++;
	if (ev)
	{
		window_bytes -= ev->wire_len;
		if (ev->refcount > 0)
			ev->evicted = true;
		else
			pfree(ev);
	}
}

/* A write that referenced the event completed or was abandoned. */
void
sse_event_release(SseEvent *ev)
{
	Assert(ev->refcount > 0);
	if (--ev->refcount == 0 && ev->evicted)
		pfree(ev);
}

/* ---- payload parsing: only the top-level fields the relay needs ---- */

#if PG_VERSION_NUM >= 160000
#define JSON_ACTION_RETURN JsonParseErrorType
#define JSON_ACTION_OK return JSON_SUCCESS
#else
#define JSON_ACTION_RETURN void
#define JSON_ACTION_OK return
#endif

static JSON_ACTION_RETURN
pf_struct_start(void *state)
{
	((PayloadFields *) state)->depth++;
	JSON_ACTION_OK;
}

static JSON_ACTION_RETURN
pf_struct_end(void *state)
{
	((PayloadFields *) state)->depth--;
	JSON_ACTION_OK;
}

static JSON_ACTION_RETURN
pf_field_start(void *state, char *fname, bool isnull)
{
	PayloadFields *pf = state;

	pf->field = (pf->depth == 1) ? fname : NULL;
	JSON_ACTION_OK;
}

static JSON_ACTION_RETURN
pf_scalar(void *state, char *token, JsonTokenType tokentype)
{
	PayloadFields *pf = state;
	const char *f = pf->field;

	if (pf->depth != 1 || f == NULL)
		JSON_ACTION_OK;
	pf->field = NULL;
	if (tokentype == JSON_TOKEN_STRING)
	{
		if (strcmp(f, "type") == 0)
			pf->type = token;
		else if (strcmp(f, "entity_id") == 0)
			pf->entity_id = token;
		else if (strcmp(f, "gateway_id") == 0)
			pf->gateway_id = token;
		else if (strcmp(f, "agent_id") == 0)
			pf->agent_id = token;
		else if (strcmp(f, "ref") == 0)
			pf->ref = token;
		else if (strcmp(f, "chunk") == 0)
			pf->chunk = token;
	}
	else if (tokentype == JSON_TOKEN_NUMBER)
	{
		if (strcmp(f, "part") == 0)
			pf->part = strtoll(token, NULL, 10);
		else if (strcmp(f, "parts") == 0)
			pf->parts = strtoll(token, NULL, 10);
	}
	JSON_ACTION_OK;
}

/*
 * Fills *pf from a payload; false when it is not a JSON object (a custom
 * NOTIFY with plain text is still relayed, as event "message").
 */
static bool
parse_payload(const char *payload, size_t len, PayloadFields *pf)
{
	JsonSemAction sem;
	JsonLexContext *lex;
	JsonParseErrorType err;

	memset(pf, 0, sizeof(*pf));
	if (len == 0 || payload[0] != '{')
		return false;
	memset(&sem, 0, sizeof(sem));
	sem.semstate = pf;
	sem.object_start = pf_struct_start;
	sem.object_end = pf_struct_end;
	sem.array_start = pf_struct_start;
	sem.array_end = pf_struct_end;
	sem.object_field_start = pf_field_start;
	sem.scalar = pf_scalar;
#if PG_VERSION_NUM >= 170000
	lex = makeJsonLexContextCstringLen(NULL, payload, len, PG_UTF8, true);
#else
	lex = makeJsonLexContextCstringLen(unconstify(char *, payload), len, PG_UTF8, true);
#endif
	err = pg_parse_json(lex, &sem);
	if (err != JSON_SUCCESS)
	{
		memset(pf, 0, sizeof(*pf));
		return false;
	}
	return true;
}

/* An SSE field value must not carry line breaks; the type is a name. */
static void
append_sanitized(StringInfo s, const char *v)
{
	for (; *v; v++)
		appendStringInfoChar(s, (*v == '\n' || *v == '\r' || *v == ':') ? '_' : *v);
}

/* Each line of the payload becomes one "data:" line. */
static void
append_data_lines(StringInfo s, const char *payload, size_t len)
{
	size_t		i = 0;

	for (;;)
	{
		size_t		start = i;

		while (i < len && payload[i] != '\n' && payload[i] != '\r')
			i++;
		appendStringInfoString(s, "data: ");
		appendBinaryStringInfo(s, payload + start, i - start);
		appendStringInfoChar(s, '\n');
		if (i >= len)
			break;
		if (payload[i] == '\r' && i + 1 < len && payload[i + 1] == '\n')
			i++;
		i++;
	}
}

/* Gives the payload the next seq, formats it once and wakes the clients. */
static void
append_event(const char *payload, size_t len, PayloadFields *pf)
{
	StringInfoData wire;
	MemoryContext old;
	SseEvent   *ev;
	char	   *p;
	const char *type = pf->type ? pf->type : "message";
	size_t		extra;

	old = MemoryContextSwitchTo(window_cxt);
	initStringInfo(&wire);
	appendStringInfo(&wire, "id: " UINT64_FORMAT "\nevent: ", window_next);
	append_sanitized(&wire, type);
	appendStringInfoChar(&wire, '\n');
	append_data_lines(&wire, payload, len);
	appendStringInfoChar(&wire, '\n');

	/* One allocation per event, freed at eviction. */
	extra = strlen(type) + 1 +
		(pf->entity_id ? strlen(pf->entity_id) + 1 : 0) +
		(pf->gateway_id ? strlen(pf->gateway_id) + 1 : 0) +
		(pf->agent_id ? strlen(pf->agent_id) + 1 : 0);
	ev = palloc0(sizeof(SseEvent) + extra + wire.len);
	p = (char *) (ev + 1);
	ev->seq = window_next;
	ev->offset = window_end_offset;
	ev->wire = p;
	memcpy(p, wire.data, wire.len);
	ev->wire_len = wire.len;
	p += wire.len;
	ev->type = p;
	strcpy(p, type);
	p += strlen(type) + 1;
#define PUT_FIELD(name) \
	if (pf->name) { ev->name = p; strcpy(p, pf->name); p += strlen(pf->name) + 1; }
	PUT_FIELD(entity_id);
	PUT_FIELD(gateway_id);
	PUT_FIELD(agent_id);
#undef PUT_FIELD
	pfree(wire.data);
	MemoryContextSwitchTo(old);

	if (window_next - window_first >= SSE_WINDOW_EVENTS)
		window_evict_oldest();
	while (window_bytes + ev->wire_len > SSE_WINDOW_MAX_BYTES && window_first < window_next)
		window_evict_oldest();
	window[window_next % SSE_WINDOW_EVENTS] = ev;
	window_next++;
	window_end_offset += ev->wire_len;
	window_bytes += ev->wire_len;
	events_relayed++;
	sse_clients_wake();
}

static void
assembly_free(Assembly *a)
{
	if (a->ref)
		pfree(a->ref);
	if (a->buf.data)
		pfree(a->buf.data);
	memset(a, 0, sizeof(*a));
}

/*
 * One part of a large payload.  Parts of one payload are sent in order in
 * one transaction, so they arrive in order; anything else (a missing part,
 * more than SSE_MAX_ASSEMBLIES payloads interleaved) abandons the payload
 * with a log line rather than relaying a corrupted one.
 */
static void
relay_part(PayloadFields *pf)
{
	Assembly   *a = NULL;
	Assembly   *oldest = &assemblies[0];
	int			i;
	int			clen = strlen(pf->chunk);
	int			dlen;
	MemoryContext old;

	for (i = 0; i < SSE_MAX_ASSEMBLIES; i++)
	{
		if (assemblies[i].ref && strcmp(assemblies[i].ref, pf->ref) == 0)
			a = &assemblies[i];
		else if (!assemblies[i].ref)
			oldest = &assemblies[i];
	}
	if (a == NULL)
	{
		if (pf->part != 1)
		{
			ereport(LOG,
					(errmsg("sse relay dropped part %lld of %lld of payload \"%s\": its first part was not seen",
							(long long) pf->part, (long long) pf->parts, pf->ref)));
			return;
		}
		a = oldest;
		if (a->ref)
		{
			ereport(LOG,
					(errmsg("sse relay abandoned incomplete payload \"%s\": too many payloads in parts at once", a->ref)));
			assembly_free(a);
		}
		old = MemoryContextSwitchTo(window_cxt);
		a->ref = pstrdup(pf->ref);
		a->parts = pf->parts;
		initStringInfo(&a->buf);
		MemoryContextSwitchTo(old);
	}
	if (pf->part != a->received + 1 || pf->parts != a->parts)
	{
		ereport(LOG,
				(errmsg("sse relay abandoned payload \"%s\": part %lld arrived after part %lld",
						a->ref, (long long) pf->part, (long long) a->received)));
		assembly_free(a);
		return;
	}
	dlen = pg_b64_dec_len(clen);
	if (a->buf.len + dlen > SSE_MAX_PAYLOAD)
	{
		ereport(LOG,
				(errmsg("sse relay abandoned payload \"%s\": larger than %d bytes", a->ref, SSE_MAX_PAYLOAD)));
		assembly_free(a);
		return;
	}
	enlargeStringInfo(&a->buf, dlen + 1);
	dlen = pg_b64_decode(pf->chunk, clen, a->buf.data + a->buf.len, dlen);
	if (dlen < 0)
	{
		ereport(LOG,
				(errmsg("sse relay abandoned payload \"%s\": part %lld is not valid base64",
						a->ref, (long long) pf->part)));
		assembly_free(a);
		return;
	}
	a->buf.len += dlen;
	a->buf.data[a->buf.len] = '\0';
	a->received++;
	if (a->received == a->parts)
	{
		PayloadFields whole;

		(void) parse_payload(a->buf.data, a->buf.len, &whole);
		append_event(a->buf.data, a->buf.len, &whole);
		assembly_free(a);
	}
}

/*
 * Entry point for every notification on machpay_events; returns the wire
 * bytes it added to the window.
 */
size_t
sse_relay_notification(const char *payload)
{
	PayloadFields pf;
	size_t		len = strlen(payload);
	MemoryContext tmp;
	MemoryContext old;
	uint64		before = window_end_offset;

	tmp = AllocSetContextCreate(CurrentMemoryContext, "machpay sse notification",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(tmp);
	(void) parse_payload(payload, len, &pf);
	if (pf.ref && pf.chunk && pf.part >= 1 && pf.parts >= pf.part)
		relay_part(&pf);
	else
		append_event(payload, len, &pf);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(tmp);
	return window_end_offset - before;
}
