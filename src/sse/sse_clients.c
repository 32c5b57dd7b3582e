/*-------------------------------------------------------------------------
 * sse_clients.c
 *	  HTTP side of the SSE relay: GET /v1/stream and GET / (console page),
 *	  served by the HTTP engine (net/net.h).
 *
 * A *client* is a position (next_seq) in the shared window plus at most one
 * write in flight: a chunk of at most SSE_CLIENT_WRITE_EVENTS events and
 * SSE_CLIENT_WRITE_CHUNK bytes copied to its connection, and its own lines
 * (preamble, reset, heartbeat).  While that write has not left the process
 * the client waits; once it has (on_drained) it gets the next chunk.  A
 * client whose backlog (wire bytes between its position and the head of
 * the window) passes SSE_CLIENT_MAX_BACKLOG, or whose position leaves the
 * window, is cut off: its HTTP/2 stream is reset or its HTTP/1.1
 * connection closed.  So a slow client costs neither memory nor the
 * others' time.
 * A client whose key stops being live (revoked, or its revoked_at passed)
 * gets a last `event: revoked` and its response ends; one whose write never
 * completes is cut off instead.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/auth.h"
#include "common/machpay.h"
#include "net/http_reply.h"
#include "net/net.h"
#include "sse/sse.h"

typedef struct SseClient
{
	NetRequest *req;			/* NULL once the engine dropped it */
	dlist_node	node;
	bool		cut;			/* cut off: waiting for the engine to drop it */
	uint64		next_seq;		/* next event to consider */
	bool		preamble_pending;
	bool		reset_pending;
	uint64		reset_from;		/* the Last-Event-ID that fell out */
	bool		heartbeat_pending;
	int			ntypes;
	char	  **types;			/* NULL = every type */
	char	   *entity;			/* NULL = every entity */
	bool		has_grant;		/* opened with a key (machpay.auth on) */
	AuthGrant	grant;			/* that key, re-checked when keys change */
	uint64		revoked_ms;		/* when found revoked, 0 = live */
	bool		ended;			/* its last event and the end are queued */
	StringInfoData out;			/* the chunk being built */
} SseClient;

static dlist_head clients = DLIST_STATIC_INIT(clients);
static int	nclients = 0;
static MemoryContext clients_cxt = NULL;
static MemoryContext request_cxt = NULL;
static uint64 last_heartbeat_ms = 0;
static int	nrevoked = 0;		/* revoked clients not dropped yet */
static bool stopping = false;	/* the relay stops: no new stream */

/* A revoked client whose write is still in flight after this is cut off. */
#define SSE_REVOKED_CUT_MS	500

static void client_finish_revoked(SseClient *c);

int
sse_clients_count(void)
{
	return nclients;
}

/* ---- small HTTP helpers ---- */

/* The percent-decoded value of query parameter "name", or NULL. */
static char *
query_param(NetRequest *req, const char *name)
{
	const char *q;
	const char *end;
	size_t		nlen = strlen(name);

	if (req->query == NULL)
		return NULL;
	q = req->query;
	end = q + strlen(q);
	while (q < end)
	{
		const char *amp = memchr(q, '&', end - q);
		const char *pend = amp ? amp : end;

		if ((size_t) (pend - q) > nlen && memcmp(q, name, nlen) == 0 && q[nlen] == '=')
		{
			StringInfoData v;
			const char *p;

			initStringInfo(&v);
			for (p = q + nlen + 1; p < pend; p++)
			{
				if (*p == '%' && pend - p >= 3 && sse_hexval(p[1]) >= 0 && sse_hexval(p[2]) >= 0)
				{
					appendStringInfoChar(&v, (char) (sse_hexval(p[1]) << 4 | sse_hexval(p[2])));
					p += 2;
				}
				else
					appendStringInfoChar(&v, *p == '+' ? ' ' : *p);
			}
			return v.data;
		}
		q = pend + 1;
	}
	return NULL;
}

static char *
header_value(NetRequest *req, const char *lname)
{
	size_t		len;
	const char *v = net_header(req, lname, &len);

	return v ? pnstrdup(v, len) : NULL;
}

/* Errors are JSON with the code words of SPEC.md, like the ingest server. */
static void
send_error(NetRequest *req, int status, const char *code, const char *message)
{
	static const char *const www_auth[] = {"www-authenticate", "Bearer", NULL};

	http_reply_error(req, status, status == 401 ? www_auth : NULL, code, message);
}

/* ---- streaming ---- */

static bool
client_wants(SseClient *c, SseEvent *ev)
{
	if (c->types)
	{
		int			i;
		bool		found = false;

		for (i = 0; i < c->ntypes && !found; i++)
			found = strcmp(c->types[i], ev->type) == 0;
		if (!found)
			return false;
	}
	if (c->entity)
	{
		if (!((ev->entity_id && strcmp(ev->entity_id, c->entity) == 0) ||
			  (ev->gateway_id && strcmp(ev->gateway_id, c->entity) == 0) ||
			  (ev->agent_id && strcmp(ev->agent_id, c->entity) == 0)))
			return false;
	}
	return true;
}

/* Writes what the client has not seen yet, if its last write went out. */
static void
client_pump(SseClient *c)
{
	uint64		head = sse_window_next_seq();
	int			nevents = 0;

	if (c->cut || c->ended || c->req == NULL || net_stream_unsent(c->req) > 0)
		return;
	if (c->revoked_ms != 0)
	{
		client_finish_revoked(c);
		return;
	}
	resetStringInfo(&c->out);
	if (c->preamble_pending)
	{
		appendStringInfoString(&c->out, "retry: 2000\n: machpay sse relay\n\n");
		c->preamble_pending = false;
	}
	if (c->next_seq < sse_window_first_seq())
	{
		c->reset_pending = true;
		c->reset_from = c->next_seq - 1;
		c->next_seq = head;
	}
	if (c->reset_pending)
	{
		/* The id moves the browser's Last-Event-ID to the live position. */
		appendStringInfo(&c->out,
						 "id: " UINT64_FORMAT "\nevent: reset\ndata: {\"type\":\"reset\",\"last_event_id\":\"" UINT64_FORMAT "\",\"oldest_available\":\"" UINT64_FORMAT "\"}\n\n",
						 head - 1, c->reset_from, sse_window_first_seq());
		c->reset_pending = false;
	}
	if (c->heartbeat_pending)
	{
		appendStringInfoString(&c->out, ": heartbeat\n\n");
		c->heartbeat_pending = false;
	}
	while (c->next_seq < head && c->out.len < SSE_CLIENT_WRITE_CHUNK &&
		   nevents < SSE_CLIENT_WRITE_EVENTS)
	{
		SseEvent   *ev = sse_window_get(c->next_seq++);

		if (ev && client_wants(c, ev))
		{
			appendBinaryStringInfo(&c->out, ev->wire, ev->wire_len);
			nevents++;
		}
	}
	if (c->out.len > 0)
		net_stream_write(c->req, c->out.data, c->out.len);
}

static void
client_drained(NetRequest *req)
{
	client_pump((SseClient *) req->user);
}

/* The engine dropped the request (client gone, stream reset, cut off). */
static void
client_gone(NetRequest *req)
{
	SseClient  *c = req->user;

	req->user = NULL;
	dlist_delete(&c->node);
	nclients--;
	if (c->revoked_ms != 0)
		nrevoked--;
	if (c->out.data)
		pfree(c->out.data);
	if (c->types)
	{
		for (int i = 0; i < c->ntypes; i++)
			pfree(c->types[i]);
		pfree(c->types);
	}
	if (c->entity)
		pfree(c->entity);
	pfree(c);
}

/*
 * The last event of a stream whose key was revoked, then the end of the
 * response; the engine drops the request (client_gone) once it went out.
 */
static void
client_finish_revoked(SseClient *c)
{
	static const char text[] = "event: revoked\ndata: {\"type\":\"revoked\",\"message\":\"the key of this stream was revoked\"}\n\n";

	c->ended = true;
	net_stream_write(c->req, text, sizeof(text) - 1);
	net_stream_end(c->req);
}

/*
 * Re-check the key of every open stream (the key cache changed).  A client
 * whose last write went out is finished now; one with a write in flight
 * when that write completes, or cut off by sse_clients_tick if it never
 * does.
 */
void
sse_clients_revalidate(void)
{
	dlist_mutable_iter iter;
	uint64		now = (uint64) (GetCurrentTimestamp() / 1000);

	dlist_foreach_modify(iter, &clients)
	{
		SseClient  *c = dlist_container(SseClient, node, iter.cur);
		AuthResult	ar;

		if (!c->has_grant || c->revoked_ms != 0 || c->cut)
			continue;
		ar = auth_recheck(&c->grant);
		/* Only a definite answer ends a stream, not a cache being reloaded. */
		if (ar != AUTH_UNKNOWN && ar != AUTH_WRONG_ROLE)
			continue;
		c->revoked_ms = Max(now, 1);
		nrevoked++;
		client_pump(c);
	}
}

/*
 * On HTTP/2 the stream is reset and the connection's other streams go on;
 * on HTTP/1.1 the connection is closed.
 */
static void
client_cut(SseClient *c, const char *why)
{
	c->cut = true;
	ereport(LOG,
			(errmsg("sse relay cut off a client: %s", why),
			 errdetail("The client was " UINT64_FORMAT " events behind.",
					   sse_window_next_seq() - c->next_seq)));
	net_stream_cut(c->req);
}

static uint64
backlog_bytes(SseClient *c)
{
	SseEvent   *ev;

	if (c->next_seq >= sse_window_next_seq())
		return 0;
	ev = sse_window_get(c->next_seq);
	if (ev == NULL)
		return UINT64_MAX;
	return sse_window_end_offset() - ev->offset;
}

/* Called when the window got new events. */
void
sse_clients_wake(void)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &clients)
	{
		SseClient  *c = dlist_container(SseClient, node, iter.cur);

		if (c->cut || c->ended)
			continue;
		if (net_stream_unsent(c->req) == 0)
			client_pump(c);
		else if (c->next_seq < sse_window_first_seq())
			client_cut(c, "its position left the replay window");
		else if (backlog_bytes(c) > SSE_CLIENT_MAX_BACKLOG)
			client_cut(c, "it could not keep up");
	}
}

void
sse_clients_tick(uint64 now_ms)
{
	dlist_mutable_iter iter;
	bool		heartbeat = false;

	if (machpay_sse_heartbeat_interval_ms > 0 &&
		now_ms - last_heartbeat_ms >= (uint64) machpay_sse_heartbeat_interval_ms)
	{
		heartbeat = true;
		last_heartbeat_ms = now_ms;
	}
	if (!heartbeat && nrevoked == 0)
		return;
	dlist_foreach_modify(iter, &clients)
	{
		SseClient  *c = dlist_container(SseClient, node, iter.cur);

		if (c->revoked_ms != 0)
		{
			/* its last write never went out: the end cannot either */
			if (!c->cut && net_stream_unsent(c->req) > 0 &&
				now_ms - c->revoked_ms >= SSE_REVOKED_CUT_MS)
				client_cut(c, "its key was revoked");
			continue;
		}
		if (heartbeat)
		{
			c->heartbeat_pending = true;
			client_pump(c);
		}
	}
}

/*
 * The relay stops: every stream ends normally after what it was already
 * sent (the last chunk, END_STREAM), so that its client sees the end of
 * the response rather than a broken connection, and reconnects (to
 * another relay, or to this one once it is back) from its Last-Event-ID.
 * A request decided from now on is answered 503.
 */
void
sse_clients_end_all(void)
{
	dlist_mutable_iter iter;

	stopping = true;
	dlist_foreach_modify(iter, &clients)
	{
		SseClient  *c = dlist_container(SseClient, node, iter.cur);

		if (c->cut || c->ended || c->req == NULL)
			continue;
		c->ended = true;
		net_stream_end(c->req);
	}
}

/* Splits "a,b" into the client's type filter. */
static void
set_types(SseClient *c, const char *list)
{
	char	   *copy = pstrdup(list);
	char	   *tok;
	char	   *save = NULL;
	int			max = 1;
	const char *p;

	for (p = list; *p; p++)
		if (*p == ',')
			max++;
	c->types = MemoryContextAlloc(clients_cxt, sizeof(char *) * max);
	c->ntypes = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		while (*tok == ' ')
			tok++;
		if (*tok)
			c->types[c->ntypes++] = MemoryContextStrdup(clients_cxt, tok);
	}
}

static void
handle_stream(NetRequest *req)
{
	char	   *entity = query_param(req, "entity");
	AuthGrant	grant;
	char	   *types = query_param(req, "types");
	char	   *last_id = header_value(req, "last-event-id");
	SseClient  *c;
	uint64		head = sse_window_next_seq();

	if (machpay_auth)
	{
		char	   *auth = header_value(req, "authorization");
		char	   *qtoken = query_param(req, "access_token");

		switch (auth_check_bearer(auth, auth ? strlen(auth) : 0,
								  qtoken, qtoken ? strlen(qtoken) : 0,
								  AUTH_ROLE_CONSOLE, &grant))
		{
			case AUTH_OK:
				break;
			case AUTH_MISSING:
				send_error(req, 401, "unauthorized", "a console key is required");
				return;
			case AUTH_UNKNOWN:
				send_error(req, 401, "unauthorized", "unknown or revoked key");
				return;
			case AUTH_WRONG_ROLE:
				send_error(req, 403, "forbidden", "an ingest key cannot read the stream; use a console key");
				return;
			case AUTH_UNAVAILABLE:
				send_error(req, 503, "not_ready", "the relay has not read the keys yet");
				return;
		}
		/* A key bound to one entity sees that entity only. */
		if (!grant.any_entity)
		{
			if (entity && strcmp(entity, grant.entity) != 0)
			{
				send_error(req, 403, "entity_not_allowed", "the key is bound to another entity");
				return;
			}
			entity = grant.entity;
		}
	}
	if (nclients >= machpay_sse_max_clients)
	{
		send_error(req, 503, "too_many_clients", "machpay.sse_max_clients reached");
		return;
	}
	if (last_id == NULL)
		last_id = query_param(req, "last_event_id");

	c = MemoryContextAllocZero(clients_cxt, sizeof(SseClient));
	c->req = req;
	if (machpay_auth)
	{
		c->has_grant = true;
		c->grant = grant;
	}
	c->preamble_pending = true;
	c->next_seq = head;
	if (last_id && *last_id)
	{
		char	   *end;
		uint64		id = strtou64(last_id, &end, 10);

		/* An id from an earlier start of the relay is below the window too. */
		if (*end == '\0' && id + 1 >= sse_window_first_seq() && id + 1 <= head)
			c->next_seq = id + 1;
		else
		{
			c->reset_pending = true;
			c->reset_from = (*end == '\0') ? id : 0;
		}
	}
	if (types && *types)
		set_types(c, types);
	if (entity && *entity)
		c->entity = MemoryContextStrdup(clients_cxt, entity);
	{
		MemoryContext old = MemoryContextSwitchTo(clients_cxt);

		initStringInfo(&c->out);
		MemoryContextSwitchTo(old);
	}
	dlist_push_tail(&clients, &c->node);
	nclients++;

	req->user = c;
	req->on_gone = client_gone;
	req->on_drained = client_drained;
	{
		const char *h[] = {
			"content-type", "text/event-stream; charset=utf-8",
			"cache-control", "no-cache",
			"x-accel-buffering", "no",
			machpay_sse_allow_origin && machpay_sse_allow_origin[0] ?
			"access-control-allow-origin" : NULL, machpay_sse_allow_origin,
			NULL
		};

		net_stream_start(req, 200, h);
	}
	client_pump(c);
}

static void
handle_console(NetRequest *req)
{
	size_t		len;
	const char *page = sse_console_page(&len);

	http_reply_text(req, 200, "text/html; charset=utf-8", NULL, page, len);
}

static void
handle_preflight(NetRequest *req)
{
	const char *h[] = {
		"access-control-allow-headers", "Authorization, Last-Event-ID",
		"access-control-allow-methods", "GET",
		machpay_sse_allow_origin && machpay_sse_allow_origin[0] ?
		"access-control-allow-origin" : NULL, machpay_sse_allow_origin,
		NULL
	};

	net_respond(req, 204, h, "", 0);
}

/* The relay's one hand-over: every request is decided at its head. */
static void
on_headers(NetRequest *req)
{
	bool		get = strcmp(req->method, "GET") == 0;
	bool		is_get = get || strcmp(req->method, "HEAD") == 0;
	MemoryContext old = MemoryContextSwitchTo(request_cxt);

	http_reply_set_cors(machpay_sse_allow_origin);
	PG_TRY();
	{
		if (stopping)
			send_error(req, 503, "shutting_down", "the relay is shutting down");
		else if (strcmp(req->path, "/v1/stream") == 0)
		{
			if (get)
				handle_stream(req);
			else if (strcmp(req->method, "OPTIONS") == 0)
				handle_preflight(req);	/* CORS, for pages that send the key */
			else
				send_error(req, 405, "method_not_allowed", "use GET");
		}
		else if (strcmp(req->path, "/") == 0 || strcmp(req->path, "/index.html") == 0)
		{
			if (is_get)
				handle_console(req);
			else
				send_error(req, 405, "method_not_allowed", "use GET");
		}
		else
			send_error(req, 404, "not_found", "no such path; the stream is GET /v1/stream");
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(request_cxt);
		EmitErrorReport();
		FlushErrorState();
		if (!net_request_answered(req))
			send_error(req, 500, "internal_error", "the request could not be processed");
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(request_cxt);
}

/* No request of the relay takes a body. */
static void
on_body(NetRequest *req)
{
	send_error(req, 400, "bad_request", "no body expected");
}

/* A protocol error: the same JSON as every answer. */
static void
on_error(NetRequest *req, int status, const char *code, const char *message)
{
	MemoryContext old = MemoryContextSwitchTo(request_cxt);

	PG_TRY();
	{
		send_error(req, status, code, message);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(request_cxt);
		EmitErrorReport();
		FlushErrorState();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextReset(request_cxt);
}

static const NetHandler sse_handler = {on_headers, on_body, on_error};

const NetHandler *
sse_clients_init(void)
{
	clients_cxt = AllocSetContextCreate(TopMemoryContext, "machpay sse clients",
										ALLOCSET_DEFAULT_SIZES);
	request_cxt = AllocSetContextCreate(TopMemoryContext, "machpay sse request",
										ALLOCSET_DEFAULT_SIZES);
	return &sse_handler;
}
