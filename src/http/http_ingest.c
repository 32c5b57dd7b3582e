/*-------------------------------------------------------------------------
 * http_ingest.c
 *	  POST /v1/ingest: the checks of SPEC §4 in order of cost, then the
 *	  mapper, then the shared buffer.
 *
 * At the head, before a body byte is read (http_ingest_headers): ready ->
 * key -> body present and declared small enough -> type and encoding ->
 * room in the buffer (429 decided from the declared length, so overload
 * costs little).  Request smuggling (Content-Length with Transfer-Encoding)
 * never gets here: the HTTP/1.1 parser answers it 400 and closes.  Then
 * the engine reads the body, inflating gzip as it comes with the limit on
 * what it inflates to, and http_ingest_body maps it (no database I/O) and
 * puts the rows into the buffer.  When only the intents' region of the
 * buffer has room, the body is read but a body without an intent is
 * refused unparsed, and one with telemetry alone is refused at the buffer.
 * A request whose events include payment intents becomes *pending*: it
 * holds a buffer ticket and is answered from the loop once the flusher
 * committed the intents (200) or gave up (503).
 *
 * Intents first: a body that carries a payment intent is mapped as soon as
 * it is in.  Telemetry bodies are mapped for at most TELEMETRY_TURN_US per
 * turn of the loop; the others wait, in arrival order, for the next turns
 * (*deferred*).  Under a flood a turn could otherwise bring hundreds of
 * telemetry bodies, and an intent that came with them would wait for all
 * of them to be mapped, and for as long again before its 200 went out.
 * A telemetry body that finds the buffer full waits the same way, up to
 * machpay.http_overload_wait, for a writer to free room before it is
 * answered 429: a client that posts again as soon as it is refused then
 * waits instead of spinning, and the CPU its refusals would cost goes to
 * the writers that make the room.  At most machpay.http_overload_queue
 * wait so at once, the others get their 429 at once: each waiting request
 * holds its connection, and a client with a fixed pool of connections
 * would otherwise fall behind.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "lib/ilist.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "buffer/buffer.h"
#include "buffer/series_registry.h"
#include "common/auth.h"
#include "common/machpay.h"
#include "common/stats.h"
#include "http/http.h"
#include "ingest/ingest.h"
#include "net/http_reply.h"

/* How long a request waits for its intents' commit before a 503. */
#define PENDING_TIMEOUT_MS		10000
#define PENDING_SCAN_MS			20
#define RETRY_AFTER_SECS		"1"
/* A body without this text carries no payment intent. */
#define INTENT_SOURCE_TEXT		"payment_intent"
/* Telemetry mapping per turn of the loop before the rest waits (intents first). */
#define TELEMETRY_TURN_US		1000
/* How often the oldest body waiting for room looks again. */
#define ROOM_POLL_MS			2

typedef struct PendingRequest
{
	dlist_node	node;
	NetRequest *req;			/* NULL once the client went away */
	BufferTicket ticket;
	MemoryContext cxt;
	MapResult  *result;			/* counts and errors, for the answer */
	IntentOutcome *outcomes;
	int			noutcomes;
	TimestampTz deadline;
} PendingRequest;

static dlist_head pending_requests = DLIST_STATIC_INIT(pending_requests);
static int	npending = 0;

/* A telemetry body waiting for a turn with mapping time left. */
typedef struct DeferredBody
{
	dlist_node	node;
	NetRequest *req;			/* NULL once the client went away */
	size_t		bytes;			/* its body, counted in deferred_bytes */
	bool		for_room;		/* came when the buffer was full */
	TimestampTz room_deadline;	/* no room in the buffer until then: 429 */
} DeferredBody;

static dlist_head deferred_bodies = DLIST_STATIC_INIT(deferred_bodies);
static int	ndeferred = 0;
static size_t deferred_bytes = 0;	/* bodies held by deferred requests */
static int	nfor_room = 0;		/* of them, those that came for room */
static bool waiting_for_room = false;	/* the oldest deferred body */
static int64 turn_mapped_us = 0;	/* telemetry mapping time of this turn */

/*
 * The ingest path's settings (retentions), loaded by its one loader now and
 * then (http_ingest_refresh_options), so a request runs no SQL.
 */
static IngestSettings ingest_settings;

/* The engine drops a request whose client went away. */
static void
pending_gone(NetRequest *req)
{
	PendingRequest *p = req->user;

	p->req = NULL;
	req->user = NULL;
}

static void
deferred_gone(NetRequest *req)
{
	DeferredBody *d = req->user;

	d->req = NULL;
	req->user = NULL;
}

/* Does the media type (parameters ignored) equal want? */
static bool
media_type_is(const char *v, size_t vlen, const char *want)
{
	size_t		len = 0;
	size_t		wlen = strlen(want);

	while (len < vlen && v[len] != ';' && v[len] != ' ')
		len++;
	return len == wlen && pg_strncasecmp(v, want, wlen) == 0;
}

static bool
value_is(const char *v, size_t vlen, const char *want)
{
	return vlen == strlen(want) && pg_strncasecmp(v, want, vlen) == 0;
}

static void
count_events(const MapResult *result, bool buffered)
{
	if (buffered)
	{
		stats_add(STAT_HTTP_EVENTS_ACCEPTED_GATEWAY, result->events_by_source[SOURCE_GATEWAY]);
		stats_add(STAT_HTTP_EVENTS_ACCEPTED_SDK, result->events_by_source[SOURCE_SDK]);
		stats_add(STAT_HTTP_EVENTS_ACCEPTED_PAYMENT_INTENT,
				  result->events_by_source[SOURCE_PAYMENT_INTENT]);
		stats_add(STAT_HTTP_EVENTS_ACCEPTED_LOG, result->events_by_source[SOURCE_LOG]);
	}
	else
		stats_add(STAT_HTTP_EVENTS_REFUSED, result->accepted);
	stats_add(STAT_HTTP_EVENTS_REJECTED, result->rejected);
}

static void
send_429(NetRequest *req)
{
	static const char *const extra[] = {"retry-after", RETRY_AFTER_SECS, NULL};

	http_reply_error(req, 429, extra, "buffer_full",
					 "the ingest buffer is full, retry later");
}

/* Keep what the answer needs beyond this request's memory context. */
static void
make_pending(NetRequest *req, const MapResult *result, const BufferTicket *ticket)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "machpay pending request",
											  ALLOCSET_SMALL_SIZES);
	PendingRequest *p = MemoryContextAllocZero(cxt, sizeof(PendingRequest));
	MapResult  *copy = MemoryContextAllocZero(cxt, sizeof(MapResult));

	p->cxt = cxt;
	p->req = req;
	p->ticket = *ticket;
	p->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PENDING_TIMEOUT_MS);

	copy->status = result->status;
	copy->accepted = result->accepted;
	copy->rejected = result->rejected;
	copy->nintents = result->nintents;
	memcpy(copy->nrows, result->nrows, sizeof(copy->nrows));
	memcpy(copy->events_by_source, result->events_by_source, sizeof(copy->events_by_source));
	copy->nerrors = result->nerrors;
	if (result->nerrors > 0)
	{
		copy->errors = MemoryContextAlloc(cxt, sizeof(MapError) * result->nerrors);
		for (int i = 0; i < result->nerrors; i++)
		{
			copy->errors[i] = result->errors[i];
			copy->errors[i].message = result->errors[i].message ?
				MemoryContextStrdup(cxt, result->errors[i].message) : NULL;
		}
	}
	p->result = copy;
	p->noutcomes = result->nintents;
	p->outcomes = MemoryContextAllocZero(cxt, sizeof(IntentOutcome) * Max(p->noutcomes, 1));

	req->user = p;
	req->on_gone = pending_gone;

	dlist_push_tail(&pending_requests, &p->node);
	npending++;
}

static void
finish_pending(PendingRequest *p)
{
	buffer_ticket_release(&p->ticket);
	if (p->req != NULL)
		p->req->user = NULL;
	dlist_delete(&p->node);
	npending--;
	MemoryContextDelete(p->cxt);
}

/*
 * The flusher sets our latch when it posts outcomes; without that, look
 * at the tickets only now and then (deadlines, a missed wake-up).
 */
int
http_ingest_poll_pending(bool latch_was_set)
{
	static TimestampTz last_scan = 0;
	dlist_mutable_iter iter;
	TimestampTz now;

	if (npending == 0)
		return 0;
	now = GetCurrentTimestamp();
	if (!latch_was_set && !TimestampDifferenceExceeds(last_scan, now, PENDING_SCAN_MS))
		return npending;
	last_scan = now;

	dlist_foreach_modify(iter, &pending_requests)
	{
		PendingRequest *p = dlist_container(PendingRequest, node, iter.cur);
		TicketState st = buffer_ticket_poll(&p->ticket, p->outcomes, p->noutcomes);
		NetRequest *req = p->req;
		MemoryContext oldcxt;

		if (st == TICKET_PENDING && now < p->deadline)
			continue;

		if (req != NULL)
		{
			req->user = NULL;
			p->req = NULL;
			oldcxt = MemoryContextSwitchTo(p->cxt);
			if (st == TICKET_COMMITTED)
			{
				StringInfoData out;

				initStringInfo(&out);
				ingest_response_json(&out, p->result, p->outcomes, p->noutcomes);
				http_reply_json(req, 200, NULL, out.data, out.len);
			}
			else
				http_reply_error(req, 503, NULL, "intents_not_committed",
								 st == TICKET_FAILED ?
								 "the payment intents could not be committed" :
								 "the payment intents were not committed in time");
			MemoryContextSwitchTo(oldcxt);
		}
		finish_pending(p);
	}
	return npending;
}

void
http_ingest_fail_pending(const char *why)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &pending_requests)
	{
		PendingRequest *p = dlist_container(PendingRequest, node, iter.cur);

		if (p->req != NULL)
		{
			NetRequest *req = p->req;

			req->user = NULL;
			p->req = NULL;
			http_reply_error(req, 503, NULL, "intents_not_committed", why);
		}
		finish_pending(p);
	}
}

/*
 * Re-read the settings the ingest path takes from tables.  Called from the loop
 * outside a transaction; a failure keeps the previous values.
 */
void
http_ingest_refresh_options(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		IngestSettings loaded;

		PushActiveSnapshot(GetTransactionSnapshot());
		ingest_settings_load(&loaded);
		ingest_settings = loaded;
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		machpay_worker_report_and_abort(oldcxt);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
}

/*
 * The key's check; false when the request was answered (401/403/503).  On
 * true *grant holds the key (any_entity with auth off).
 */
static bool
check_key(NetRequest *req, AuthGrant *grant)
{
	static const char *const www_auth[] = {"www-authenticate", "Bearer", NULL};
	static const char *const retry_after[] = {"retry-after", RETRY_AFTER_SECS, NULL};
	const char *h;
	size_t		hlen = 0;
	AuthResult	ar;

	memset(grant, 0, sizeof(*grant));
	grant->any_entity = true;
	if (!machpay_auth)
		return true;
	h = net_header(req, "authorization", &hlen);
	ar = auth_check_bearer(h, h ? hlen : 0, NULL, 0, AUTH_ROLE_INGEST, grant);
	if (ar == AUTH_MISSING || ar == AUTH_UNKNOWN)
	{
		http_reply_error(req, 401, www_auth, "unauthorized",
						 ar == AUTH_MISSING ? "missing bearer token" :
						 "unknown or revoked key");
		return false;
	}
	if (ar == AUTH_WRONG_ROLE)
	{
		http_reply_error(req, 403, NULL, "forbidden", "this key may not ingest");
		return false;
	}
	if (ar == AUTH_UNAVAILABLE)
	{
		http_reply_error(req, 503, retry_after, "not_ready", "the keys are being reloaded");
		return false;
	}
	return true;
}

/*
 * Everything the head decides, answered before a body byte is read; a
 * request that passes gets its body read (http_ingest_body follows).
 */
/*
 * The flushers take no rows.  When that is because the server stops (they
 * began their last flush before this worker heard of the stop), say so:
 * a client retries elsewhere at once instead of waiting for readiness.
 */
static void
reply_not_accepting(NetRequest *req)
{
	if (buffer_shutting_down())
		http_reply_error(req, 503, NULL, "shutting_down", "the server is shutting down");
	else
		http_reply_error(req, 503, NULL, "not_ready", "the flusher is not running");
}

void
http_ingest_headers(NetRequest *req, const HttpWorkerStatus *status)
{
	const char *h;
	size_t		hlen;
	AuthGrant	grant;

	if (status->state == HTTP_STATE_DRAINING)
	{
		http_reply_error(req, 503, NULL, "shutting_down", "the server is shutting down");
		return;
	}
	if (!status->extension_ready)
	{
		http_reply_error(req, 503, NULL, "not_ready", "the extension is not installed yet");
		return;
	}
	if (RecoveryInProgress())
	{
		http_reply_error(req, 503, NULL, "standby",
						 "this server is a standby and does not ingest");
		return;
	}
	if (!check_key(req, &grant))
		return;

	if (!req->has_body && req->content_length < 0)
	{
		http_reply_error(req, 411, NULL, "length_required",
						 "a body with Content-Length or chunked encoding is required");
		return;
	}
	if (req->content_length > (int64) machpay_max_body_size)
	{
		http_reply_error(req, 413, NULL, "too_large",
						 "the body is larger than machpay.max_body_size");
		return;
	}

	h = net_header(req, "content-type", &hlen);
	if (h == NULL || !(media_type_is(h, hlen, "application/json") ||
					   media_type_is(h, hlen, "application/x-ndjson")))
	{
		http_reply_error(req, 415, NULL, "unsupported_media_type",
						 "Content-Type must be application/json or application/x-ndjson");
		return;
	}
	h = net_header(req, "content-encoding", &hlen);
	if (h != NULL && !value_is(h, hlen, "gzip") && !value_is(h, hlen, "identity"))
	{
		http_reply_error(req, 415, NULL, "unsupported_encoding",
						 "Content-Encoding must be gzip or identity");
		return;
	}

	/*
	 * No flusher (starting, restarting after a crash, draining on shutdown):
	 * 503 not ready, not a 429 that tells the client to retry soon.
	 */
	if (!buffer_accepting())
	{
		reply_not_accepting(req);
		return;
	}
	/*
	 * Overload: refuse before reading the body.  When only the payment
	 * intents' region has room (telemetry filled its own), the body is read
	 * to learn whether it holds an intent (http_ingest_body).
	 */
	if (buffer_room(Max(req->content_length, 0)) == BUFFER_ROOM_NONE)
	{
		send_429(req);
		return;
	}
	net_read_body(req, (size_t) machpay_max_body_size);
}

static bool
carries_intent(const NetRequest *req)
{
	return req->body_status == NET_BODY_OK &&
		memmem(req->body, req->body_len,
			   INTENT_SOURCE_TEXT, strlen(INTENT_SOURCE_TEXT)) != NULL;
}

static void map_body(NetRequest *req);

/* A new turn of the loop: its telemetry mapping time starts again. */
void
http_ingest_begin_turn(void)
{
	turn_mapped_us = 0;
}

/* Bodies waiting for mapping time or for room. */
int
http_ingest_deferred(void)
{
	return ndeferred;
}

/*
 * How long the loop may sleep for the deferred bodies: not at all while
 * they wait for mapping time, a moment while the oldest waits for room
 * (the writers do not wake us when they free some), else `idle_ms`.
 */
long
http_ingest_deferred_wait_ms(long idle_ms)
{
	if (ndeferred == 0)
		return idle_ms;
	return waiting_for_room ? Min(idle_ms, ROOM_POLL_MS) : 0;
}

/* Room for this telemetry body now, or is it refused anyway? */
static bool
room_or_refused(const DeferredBody *d)
{
	return buffer_room(d->bytes) == BUFFER_ROOM_ANY || !buffer_accepting() ||
		GetCurrentTimestamp() >= d->room_deadline;
}

/* Telemetry maps within the turn's time, timed; intents map at once. */
static void
map_body_timed(NetRequest *req)
{
	TimestampTz start = GetCurrentTimestamp();

	map_body(req);
	turn_mapped_us += GetCurrentTimestamp() - start;
}

static void
defer_body(NetRequest *req, bool for_room, TimestampTz room_deadline)
{
	DeferredBody *d = MemoryContextAlloc(TopMemoryContext, sizeof(DeferredBody));

	d->req = req;
	d->bytes = req->body_len;
	d->for_room = for_room;
	nfor_room += for_room ? 1 : 0;
	d->room_deadline = room_deadline;
	req->user = d;
	req->on_gone = deferred_gone;
	dlist_push_tail(&deferred_bodies, &d->node);
	ndeferred++;
	deferred_bytes += d->bytes;
	stats_add(STAT_HTTP_BODIES_DEFERRED, 1);
}

/*
 * The body is in (inflated): map it now, or wait behind earlier telemetry
 * (for mapping time, or for room: at most machpay.http_overload_wait, and
 * while what waits holds no more than the buffer could).
 */
void
http_ingest_body(NetRequest *req)
{
	bool		room;
	TimestampTz now = GetCurrentTimestamp();

	if (req->body_status != NET_BODY_OK || carries_intent(req))
	{
		map_body(req);			/* an answer to send, or an intent */
		return;
	}
	/* Room goes to those that wait for it first. */
	room = nfor_room == 0 && buffer_room(req->body_len) == BUFFER_ROOM_ANY;
	if (ndeferred == 0 && (room ? turn_mapped_us < TELEMETRY_TURN_US :
						   machpay_http_overload_wait_ms == 0))
	{
		map_body_timed(req);	/* mapped, or refused (429) */
		return;
	}
	if (!room && (nfor_room >= machpay_http_overload_queue ||
				  deferred_bytes + req->body_len > buffer_capacity()))
	{
		map_body_timed(req);	/* enough wait already: 429 at once */
		return;
	}
	defer_body(req, !room, TimestampTzPlusMilliseconds(now, machpay_http_overload_wait_ms));
}

/*
 * The next deferred body to map in this turn, or NULL when none waits,
 * the turn's telemetry time is spent, or the oldest still waits for room
 * (they wait in arrival order).  The caller maps it with
 * http_ingest_map_deferred, which refuses it if there is still no room.
 */
NetRequest *
http_ingest_next_deferred(void)
{
	waiting_for_room = false;
	while (ndeferred > 0 && turn_mapped_us < TELEMETRY_TURN_US)
	{
		DeferredBody *d = dlist_container(DeferredBody, node,
										  dlist_head_node(&deferred_bodies));
		NetRequest *req = d->req;

		if (req != NULL && !room_or_refused(d))
		{
			waiting_for_room = true;
			return NULL;
		}
		dlist_delete(&d->node);
		ndeferred--;
		deferred_bytes -= d->bytes;
		nfor_room -= d->for_room ? 1 : 0;
		pfree(d);
		if (req == NULL)
			continue;			/* its client went away */
		req->user = NULL;
		req->on_gone = NULL;
		return req;
	}
	return NULL;
}

void
http_ingest_map_deferred(NetRequest *req)
{
	map_body_timed(req);
}

/* Map the body and buffer its rows; answer, or leave the request pending. */
static void
map_body(NetRequest *req)
{
	AuthGrant	grant;
	const char *h;
	size_t		hlen;
	bool		ndjson;
	MapOptions	opts;
	MapResult	result;
	BufferTicket ticket;
	BufferPutStatus put;
	BufferRoom	room;
	StringInfoData out;
	char		peer[64];

	switch (req->body_status)
	{
		case NET_BODY_OK:
			break;
		case NET_BODY_TOO_LARGE:
			http_reply_error(req, 413, NULL, "too_large",
							 req->gzip ?
							 "the decompressed body is larger than machpay.max_body_size" :
							 "the body is larger than machpay.max_body_size");
			return;
		case NET_BODY_BAD_ENCODING:
			http_reply_error(req, 400, NULL, "bad_request", "the gzip body is corrupt");
			return;
		case NET_BODY_BROKEN:
			http_reply_error(req, 400, NULL, "bad_request", "the body is incomplete");
			return;
	}
	/* The key was checked at the head; this gives its entity again. */
	if (!check_key(req, &grant))
		return;

	/*
	 * The flushers stopped taking rows while the body came (a shutdown that
	 * began with the request in flight): 503 as at the head, not a 429
	 * that tells the client to retry soon.
	 */
	if (!buffer_accepting())
	{
		reply_not_accepting(req);
		return;
	}
	/*
	 * Only the intents' region has room: a body without an intent is
	 * refused unparsed (one with telemetry alone is refused at the put).
	 */
	room = buffer_room(req->body_len);
	if (room == BUFFER_ROOM_NONE ||
		(room == BUFFER_ROOM_INTENTS_ONLY &&
		 memmem(req->body, req->body_len,
				INTENT_SOURCE_TEXT, strlen(INTENT_SOURCE_TEXT)) == NULL))
	{
		send_429(req);
		return;
	}
	h = net_header(req, "content-type", &hlen);
	ndjson = h != NULL && media_type_is(h, hlen, "application/x-ndjson");

	(void) net_peer_address(req, peer, sizeof(peer));
	/* This request is the worker's statement: its start is the receipt time. */
	SetCurrentStatementStartTimestamp();
	ingest_prepare(&opts, &ingest_settings, grant.any_entity ? NULL : grant.entity,
				   (int64) req->body_wire_len);
	opts.remote_addr = peer[0] ? peer : NULL;
	memset(&result, 0, sizeof(result));
	map_json_text(req->body, req->body_len, ndjson, &opts, &result);
	initStringInfo(&out);

	/* 400 not JSON, 413 / 422 past a cap: nothing of it is stored */
	if (result.status != MAP_OK)
	{
		int			status = ingest_refusal_http_status(result.status);

		ingest_response_json(&out, &result, NULL, 0);
		http_reply_json(req, status, NULL, out.data, out.len);
		return;
	}
	/* Events with new series past their entity's limit become rejected. */
	if (!series_registry_admit(&result, &opts))
	{
		http_reply_error(req, 503, NULL, "not_ready", "the series registry is being loaded");
		return;
	}

	memset(&ticket, 0, sizeof(ticket));
	if (result.accepted == 0 && result.rejected > 0)
	{
		/* Dead letters of the rejected events, if the buffer has room. */
		if (result.rows.len > 0 && result.nintents == 0)
			(void) ingest_put(&result, &ticket);
		count_events(&result, true);
		ingest_response_json(&out, &result, NULL, 0);
		http_reply_json(req, 422, NULL, out.data, out.len);
		return;
	}

	put = result.rows.len > 0 ? ingest_put(&result, &ticket) : BUFFER_PUT_OK;
	switch (put)
	{
		case BUFFER_PUT_OK:
			count_events(&result, true);
			if (result.nintents > 0)
			{
				make_pending(req, &result, &ticket);
				return;
			}
			ingest_response_json(&out, &result, NULL, 0);
			http_reply_json(req, 202, NULL, out.data, out.len);
			return;
		case BUFFER_PUT_FULL:
			count_events(&result, false);
			send_429(req);
			return;
		case BUFFER_PUT_UNAVAILABLE:
			count_events(&result, false);
			reply_not_accepting(req);
			return;
	}
}
