/*-------------------------------------------------------------------------
 * http_ingest.c
 *	  POST /v1/ingest: the checks of SPEC §4 in order of cost, then the
 *	  mapper, then the shared buffer.
 *
 * Order: ready -> no smuggling -> key -> body present and small enough ->
 * type and encoding -> room in the buffer (429 decided from the declared
 * length, before any parsing, so overload costs little; when only the
 * intents' region has room, a body without an intent is refused unparsed)
 * -> inflate -> map (no database I/O) -> buffer.  A request whose events include payment
 * intents becomes *pending*: it holds a buffer ticket and is answered from
 * the loop once the flusher committed the intents (200) or gave up (503).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <zlib.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "lib/ilist.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "common/auth.h"
#include "buffer/buffer.h"
#include "http/http.h"
#include "common/machpay.h"
#include "mapper/mapper.h"
#include "common/stats.h"

/* How long a request waits for its intents' commit before a 503. */
#define PENDING_TIMEOUT_MS		10000
#define PENDING_SCAN_MS			20
#define RETRY_AFTER_SECS		"1"
#define INFLATE_CHUNK			(64 * 1024)
/* A body without this text carries no payment intent. */
#define INTENT_SOURCE_TEXT		"payment_intent"

typedef struct PendingRequest PendingRequest;

/* Allocated in the h2o request's pool: tells us when h2o disposes it. */
typedef struct PendingGuard
{
	PendingRequest *pending;
} PendingGuard;

struct PendingRequest
{
	dlist_node	node;
	h2o_req_t  *req;			/* NULL once the client went away */
	PendingGuard *guard;
	BufferTicket ticket;
	MemoryContext cxt;
	MapResult  *result;			/* counts and errors, for the answer */
	IntentOutcome *outcomes;
	int			noutcomes;
	TimestampTz deadline;
};

static dlist_head pending_requests = DLIST_STATIC_INIT(pending_requests);
static int	npending = 0;

/* Retention limits of the mapper, read from machpay.retention_policies. */
static int64 metrics_retention_us = 0;
static int64 logs_retention_us = 0;

static void
guard_dispose(void *p)
{
	PendingGuard *guard = p;

	if (guard->pending != NULL)
		guard->pending->req = NULL;
}

static const h2o_iovec_t *
find_header(h2o_req_t *req, const h2o_token_t *token)
{
	ssize_t		i = h2o_find_header(&req->headers, token, -1);

	return i < 0 ? NULL : &req->headers.entries[i].value;
}

/* Does the media type (parameters ignored) equal want? */
static bool
media_type_is(const h2o_iovec_t *v, const char *want)
{
	size_t		len = 0;
	size_t		wlen = strlen(want);

	while (len < v->len && v->base[len] != ';' && v->base[len] != ' ')
		len++;
	return len == wlen && pg_strncasecmp(v->base, want, wlen) == 0;
}

/*
 * h2o lets Transfer-Encoding win over Content-Length and drops both from
 * the header list, so look at the raw request head of an HTTP/1 request:
 * it stays at the start of the socket's input buffer until the answer.
 */
static bool
has_length_and_chunked(h2o_req_t *req)
{
	h2o_socket_t *sock;
	const char *p;
	const char *end;
	bool		cl = false;
	bool		te = false;

	if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL)
		return false;
	sock = req->conn->callbacks->get_socket(req->conn);
	if (sock == NULL || sock->input == NULL)
		return false;
	p = sock->input->bytes;
	end = p + Min(sock->input->size, (size_t) H2O_MAX_REQLEN);

	/* Skip the request line, then look at each header line. */
	while (p < end && *p != '\n')
		p++;
	while (p < end)
	{
		const char *line = ++p;

		while (p < end && *p != '\n')
			p++;
		if (p - line <= 1)		/* empty line: end of the head */
			break;
		if (p - line > 15 && pg_strncasecmp(line, "content-length:", 15) == 0)
			cl = true;
		else if (p - line > 18 && pg_strncasecmp(line, "transfer-encoding:", 18) == 0)
			te = true;
	}
	return cl && te;
}

static void
peer_address(h2o_req_t *req, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	socklen_t	len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *) &ss);

	out[0] = '\0';
	if (len == 0)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *) &ss)->sin_addr, out, outlen);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &ss)->sin6_addr, out, outlen);
}

/* Returns 0, 400 (corrupt gzip) or 413 (inflated body over the limit). */
static int
inflate_body(const char *in, size_t inlen, size_t limit, StringInfo out)
{
	z_stream	zs;
	int			status = 0;

	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		elog(ERROR, "could not initialise zlib");
	zs.next_in = (Bytef *) in;
	zs.avail_in = inlen;

	for (;;)
	{
		int			ret;

		if (out->maxlen - out->len < INFLATE_CHUNK / 2)
		{
			if ((size_t) out->len > limit)
			{
				status = 413;
				break;
			}
			enlargeStringInfo(out, INFLATE_CHUNK);
		}
		zs.next_out = (Bytef *) out->data + out->len;
		zs.avail_out = out->maxlen - out->len - 1;
		ret = inflate(&zs, Z_NO_FLUSH);
		out->len = (char *) zs.next_out - out->data;
		if ((size_t) out->len > limit)
		{
			status = 413;
			break;
		}
		if (ret == Z_STREAM_END)
		{
			/* Concatenated gzip members are one body. */
			if (zs.avail_in == 0)
				break;
			if (inflateReset(&zs) != Z_OK)
			{
				status = 400;
				break;
			}
			continue;
		}
		if (ret != Z_OK && !(ret == Z_BUF_ERROR && zs.avail_out == 0))
		{
			status = 400;
			break;
		}
		if (ret == Z_OK && zs.avail_in == 0 && zs.avail_out > 0)
		{
			status = 400;		/* truncated stream */
			break;
		}
	}
	inflateEnd(&zs);
	out->data[out->len] = '\0';
	return status;
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
send_429(h2o_req_t *req)
{
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
				   H2O_STRLIT(RETRY_AFTER_SECS));
	http_send_error(req, 429, "Too Many Requests", "buffer_full",
					"the ingest buffer is full, retry later");
}

/* Keep what the answer needs beyond this request's memory context. */
static void
make_pending(h2o_req_t *req, const MapResult *result, const BufferTicket *ticket)
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

	p->guard = h2o_mem_alloc_shared(&req->pool, sizeof(PendingGuard), guard_dispose);
	p->guard->pending = p;

	dlist_push_tail(&pending_requests, &p->node);
	npending++;
}

static void
finish_pending(PendingRequest *p)
{
	buffer_ticket_release(&p->ticket);
	if (p->req != NULL)
		p->guard->pending = NULL;
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
		h2o_req_t  *req = p->req;
		MemoryContext oldcxt;

		if (st == TICKET_PENDING && now < p->deadline)
			continue;

		if (req != NULL)
		{
			http_status.answered_from_loop = true;
			/* Detach first: sending may dispose the request at once. */
			p->guard->pending = NULL;
			p->req = NULL;
			oldcxt = MemoryContextSwitchTo(p->cxt);
			if (st == TICKET_COMMITTED)
			{
				StringInfoData out;

				initStringInfo(&out);
				map_response_json(&out, p->result, p->outcomes, p->noutcomes);
				http_send_json(req, 200, "OK", out.data, out.len);
			}
			else
				http_send_error(req, 503, "Service Unavailable", "intents_not_committed",
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
			h2o_req_t  *req = p->req;

			p->guard->pending = NULL;
			p->req = NULL;
			http_send_error(req, 503, "Service Unavailable", "intents_not_committed", why);
		}
		finish_pending(p);
	}
}

/*
 * Re-read the settings the mapper takes from tables.  Called from the loop
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
		MapOptions	opts;

		PushActiveSnapshot(GetTransactionSnapshot());
		map_options_load(&opts, GetCurrentTimestamp());
		metrics_retention_us = opts.metrics_retention_us;
		logs_retention_us = opts.logs_retention_us;
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

void
http_ingest_request(h2o_req_t *req)
{
	const h2o_iovec_t *h;
	const char *bound_entity = NULL;
	AuthGrant	grant;
	const char *body;
	size_t		len;
	bool		ndjson;
	bool		gzip = false;
	MapOptions	opts;
	MapResult	result;
	BufferTicket ticket;
	BufferPutStatus put;
	BufferRoom	room;
	StringInfoData out;
	char		peer[INET6_ADDRSTRLEN];

	if (http_status.state == HTTP_STATE_DRAINING)
	{
		http_send_error(req, 503, "Service Unavailable", "shutting_down",
						"the server is shutting down");
		return;
	}
	if (!http_status.extension_ready)
	{
		http_send_error(req, 503, "Service Unavailable", "not_ready",
						"the extension is not installed yet");
		return;
	}
	if (RecoveryInProgress())
	{
		http_send_error(req, 503, "Service Unavailable", "standby",
						"this server is a standby and does not ingest");
		return;
	}

	/* Request smuggling: answer and close, read nothing more from it. */
	if (has_length_and_chunked(req))
	{
		req->http1_is_persistent = 0;
		http_send_error(req, 400, "Bad Request", "bad_request",
						"both Content-Length and Transfer-Encoding");
		return;
	}

	if (machpay_auth)
	{
		AuthResult	ar;

		h = find_header(req, H2O_TOKEN_AUTHORIZATION);
		ar = auth_check_bearer(h ? h->base : NULL, h ? h->len : 0, NULL, 0,
							   AUTH_ROLE_INGEST, &grant);
		if (ar == AUTH_MISSING || ar == AUTH_UNKNOWN)
		{
			h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE,
						   NULL, H2O_STRLIT("Bearer"));
			http_send_error(req, 401, "Unauthorized", "unauthorized",
							ar == AUTH_MISSING ? "missing bearer token" :
							"unknown or revoked key");
			return;
		}
		if (ar == AUTH_WRONG_ROLE)
		{
			http_send_error(req, 403, "Forbidden", "forbidden",
							"this key may not ingest");
			return;
		}
		if (ar == AUTH_UNAVAILABLE)
		{
			h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER,
						   NULL, H2O_STRLIT("1"));
			http_send_error(req, 503, "Service Unavailable", "not_ready",
							"the keys are being reloaded");
			return;
		}
		if (!grant.any_entity)
			bound_entity = grant.entity;
	}

	if (req->entity.base == NULL)
	{
		http_send_error(req, 411, "Length Required", "length_required",
						"a body with Content-Length or chunked encoding is required");
		return;
	}
	if (req->entity.len > (size_t) machpay_max_body_size)
	{
		http_send_error(req, 413, "Payload Too Large", "too_large",
						"the body is larger than machpay.max_body_size");
		return;
	}

	h = find_header(req, H2O_TOKEN_CONTENT_TYPE);
	if (h != NULL && media_type_is(h, "application/json"))
		ndjson = false;
	else if (h != NULL && media_type_is(h, "application/x-ndjson"))
		ndjson = true;
	else
	{
		http_send_error(req, 415, "Unsupported Media Type", "unsupported_media_type",
						"Content-Type must be application/json or application/x-ndjson");
		return;
	}
	h = find_header(req, H2O_TOKEN_CONTENT_ENCODING);
	if (h != NULL)
	{
		if (h2o_lcstris(h->base, h->len, H2O_STRLIT("gzip")))
			gzip = true;
		else if (!h2o_lcstris(h->base, h->len, H2O_STRLIT("identity")))
		{
			http_send_error(req, 415, "Unsupported Media Type", "unsupported_encoding",
							"Content-Encoding must be gzip or identity");
			return;
		}
	}

	/*
	 * No flusher (starting, restarting after a crash, draining on shutdown):
	 * 503 not ready, not a 429 that tells the client to retry soon.
	 */
	if (!buffer_accepting())
	{
		http_send_error(req, 503, "Service Unavailable", "not_ready",
						"the flusher is not running");
		return;
	}

	/*
	 * Overload: refuse before spending anything on the body.  When only the
	 * payment intents' region has room (telemetry filled its own), a body
	 * that cannot hold an intent is refused unparsed; one that may is
	 * parsed, and refused only if it holds telemetry alone.
	 */
	room = buffer_room(req->entity.len);
	if (room == BUFFER_ROOM_NONE ||
		(room == BUFFER_ROOM_INTENTS_ONLY && !gzip &&
		 memmem(req->entity.base, req->entity.len,
				INTENT_SOURCE_TEXT, strlen(INTENT_SOURCE_TEXT)) == NULL))
	{
		send_429(req);
		return;
	}

	body = req->entity.base;
	len = req->entity.len;
	if (gzip)
	{
		StringInfoData inflated;
		int			st;

		initStringInfo(&inflated);
		st = inflate_body(body, len, (size_t) machpay_max_body_size, &inflated);
		if (st == 413)
		{
			http_send_error(req, 413, "Payload Too Large", "too_large",
							"the decompressed body is larger than machpay.max_body_size");
			return;
		}
		if (st != 0)
		{
			http_send_error(req, 400, "Bad Request", "bad_request",
							"the gzip body is corrupt");
			return;
		}
		body = inflated.data;
		len = inflated.len;
	}

	peer_address(req, peer, sizeof(peer));
	map_options_init(&opts, GetCurrentTimestamp());
	opts.max_clock_skew_us = (int64) machpay_max_clock_skew_s * USECS_PER_SEC;
	if (metrics_retention_us > 0)
		opts.metrics_retention_us = metrics_retention_us;
	if (logs_retention_us > 0)
		opts.logs_retention_us = logs_retention_us;
	opts.bound_entity = bound_entity;
	opts.remote_addr = peer[0] ? peer : NULL;
	map_options_set_caps(&opts, (int64) req->entity.len);
	memset(&result, 0, sizeof(result));
	map_json_text(body, len, ndjson, &opts, &result);

	/* 400 not JSON, 413 / 422 past a cap: nothing of it is stored */
	if (result.status != MAP_OK)
	{
		int			status = map_refusal_http_status(result.status);

		initStringInfo(&out);
		map_response_json(&out, &result, NULL, 0);
		http_send_json(req, status, status == 400 ? "Bad Request" :
					   status == 413 ? "Payload Too Large" : "Unprocessable Entity",
					   out.data, out.len);
		return;
	}

	initStringInfo(&out);
	memset(&ticket, 0, sizeof(ticket));
	if (result.accepted == 0 && result.rejected > 0)
	{
		/* Dead letters of the rejected events, if the buffer has room. */
		if (result.rows.len > 0 && result.nintents == 0)
			(void) buffer_put(&result, &ticket);
		count_events(&result, true);
		map_response_json(&out, &result, NULL, 0);
		http_send_json(req, 422, "Unprocessable Entity", out.data, out.len);
		return;
	}

	put = result.rows.len > 0 ? buffer_put(&result, &ticket) : BUFFER_PUT_OK;
	switch (put)
	{
		case BUFFER_PUT_OK:
			count_events(&result, true);
			if (result.nintents > 0)
			{
				make_pending(req, &result, &ticket);
				return;
			}
			map_response_json(&out, &result, NULL, 0);
			http_send_json(req, 202, "Accepted", out.data, out.len);
			return;
		case BUFFER_PUT_FULL:
			count_events(&result, false);
			send_429(req);
			return;
		case BUFFER_PUT_UNAVAILABLE:
			count_events(&result, false);
			http_send_error(req, 503, "Service Unavailable", "not_ready",
							"the flusher is not running");
			return;
	}
}
