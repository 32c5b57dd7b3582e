/*-------------------------------------------------------------------------
 * sse_clients.c
 *	  HTTP side of the SSE relay: GET /v1/stream and GET / (console page).
 *
 * A *client* owns no copy of the events: it is a position (next_seq) in the
 * shared window plus one write in flight that references (refcounts) at
 * most SSE_CLIENT_WRITE_EVENTS events of the window, and a small buffer
 * for its own lines (preamble, reset, heartbeat).  While a write is in flight the client
 * is SENDING; when h2o calls proceed it is IDLE again and gets the next
 * chunk.  A client whose backlog (wire bytes between its position and the
 * head of the window) passes SSE_CLIENT_MAX_BACKLOG, or whose position
 * leaves the window, is cut off: its connection is shut down and h2o
 * disposes of it.  So a slow client costs neither memory nor the others'
 * time.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include "lib/ilist.h"
#include "lib/stringinfo.h"
#include "utils/memutils.h"

#include "common/machpay.h"
#include "sse/sse.h"

typedef enum SseClientState
{
	SSE_CLIENT_IDLE,			/* nothing in flight: may be written to */
	SSE_CLIENT_SENDING,			/* a write is in flight until proceed */
	SSE_CLIENT_CUT				/* connection shut down; waiting for stop */
} SseClientState;

typedef struct SseClient
{
	h2o_generator_t generator;	/* first: h2o hands it back to us */
	h2o_req_t  *req;
	dlist_node	node;
	SseClientState state;
	uint64		next_seq;		/* next event to consider */
	bool		preamble_pending;
	bool		reset_pending;
	uint64		reset_from;		/* the Last-Event-ID that fell out */
	bool		heartbeat_pending;
	int			ntypes;
	char	  **types;			/* NULL = every type */
	char	   *entity;			/* NULL = every entity */
	StringInfoData out;			/* own lines of the write in flight */
	int			nheld;
	SseEvent   *held[SSE_CLIENT_WRITE_EVENTS];	/* events of the write in flight */
	h2o_iovec_t iov[SSE_CLIENT_WRITE_EVENTS + 1];
} SseClient;

static dlist_head clients = DLIST_STATIC_INIT(clients);
static int	nclients = 0;
static MemoryContext clients_cxt = NULL;
static MemoryContext request_cxt = NULL;
static uint64 last_heartbeat_ms = 0;
static uint64 last_check_ms = 0;

/* How often idle HTTP/1 clients are checked for a closed connection. */
#define SSE_CLIENT_CHECK_MS 250

int
sse_clients_count(void)
{
	return nclients;
}

/* ---- small HTTP helpers ---- */

/* The percent-decoded value of query parameter "name", or NULL. */
static char *
query_param(h2o_req_t *req, const char *name)
{
	const char *q;
	const char *end;
	size_t		nlen = strlen(name);

	if (req->query_at == SIZE_MAX)
		return NULL;
	q = req->path.base + req->query_at + 1;
	end = req->path.base + req->path.len;
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
header_value(h2o_req_t *req, const h2o_token_t *token, const char *name)
{
	ssize_t		i;

	if (token)
		i = h2o_find_header(&req->headers, token, -1);
	else
		i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
	if (i < 0)
		return NULL;
	return pnstrdup(req->headers.entries[i].value.base, req->headers.entries[i].value.len);
}

static void
add_cors(h2o_req_t *req)
{
	if (machpay_sse_allow_origin && machpay_sse_allow_origin[0])
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
					   machpay_sse_allow_origin, strlen(machpay_sse_allow_origin));
}

/* Errors are JSON with the code words of SPEC.md, like the ingest server. */
static void
send_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *message)
{
	char	   *body = psprintf("{\"error\":\"%s\",\"message\":\"%s\"}\n", code, message);

	req->res.status = status;
	req->res.reason = reason;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
				   H2O_STRLIT("application/json"));
	if (status == 401)
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
					   H2O_STRLIT("Bearer"));
	add_cors(req);
	h2o_send_inline(req, body, strlen(body));
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

static void
client_release_held(SseClient *c)
{
	int			i;

	for (i = 0; i < c->nheld; i++)
		sse_event_release(c->held[i]);
	c->nheld = 0;
}

/* Writes what the client has not seen yet, if nothing is in flight. */
static void
client_pump(SseClient *c)
{
	uint64		head = sse_window_next_seq();
	size_t		bytes;
	int			niov = 0;

	if (c->state != SSE_CLIENT_IDLE)
		return;
	client_release_held(c);
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
	if (c->out.len > 0)
		c->iov[niov++] = h2o_iovec_init(c->out.data, c->out.len);
	bytes = c->out.len;
	while (c->next_seq < head && bytes < SSE_CLIENT_WRITE_CHUNK &&
		   c->nheld < SSE_CLIENT_WRITE_EVENTS)
	{
		SseEvent   *ev = sse_window_get(c->next_seq++);

		if (ev && client_wants(c, ev))
		{
			ev->refcount++;
			c->held[c->nheld++] = ev;
			c->iov[niov++] = h2o_iovec_init(ev->wire, ev->wire_len);
			bytes += ev->wire_len;
		}
	}
	if (niov == 0)
		return;
	c->state = SSE_CLIENT_SENDING;
	h2o_send(c->req, c->iov, niov, H2O_SEND_STATE_IN_PROGRESS);
}

static void
client_proceed(h2o_generator_t *generator, h2o_req_t *req)
{
	SseClient  *c = (SseClient *) generator;

	if (c->state == SSE_CLIENT_SENDING)
		c->state = SSE_CLIENT_IDLE;
	client_pump(c);
}

static void
client_stop(h2o_generator_t *generator, h2o_req_t *req)
{
	SseClient  *c = (SseClient *) generator;

	dlist_delete(&c->node);
	nclients--;
	client_release_held(c);
	if (c->out.data)
		pfree(c->out.data);
	if (c->types)
	{
		int			i;

		for (i = 0; i < c->ntypes; i++)
			pfree(c->types[i]);
		pfree(c->types);
	}
	if (c->entity)
		pfree(c->entity);
	pfree(c);
}

/*
 * Shutting the socket down makes h2o's pending write fail, and h2o then
 * disposes of the request (client_stop).  On HTTP/2 this ends every stream
 * of that connection: they share the one TCP connection that is stuck.
 */
static void
client_cut(SseClient *c, const char *why)
{
	h2o_socket_t *sock = NULL;

	if (c->req->conn->callbacks->get_socket)
		sock = c->req->conn->callbacks->get_socket(c->req->conn);
	c->state = SSE_CLIENT_CUT;
	ereport(LOG,
			(errmsg("sse relay cut off a client: %s", why),
			 errdetail("The client was " UINT64_FORMAT " events behind.",
					   sse_window_next_seq() - c->next_seq)));
	if (sock)
		(void) shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
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

/* Called when the window got a new event. */
void
sse_clients_wake(void)
{
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &clients)
	{
		SseClient  *c = dlist_container(SseClient, node, iter.cur);

		if (c->state == SSE_CLIENT_IDLE)
			client_pump(c);
		else if (c->state == SSE_CLIENT_SENDING)
		{
			if (c->next_seq < sse_window_first_seq())
				client_cut(c, "its position left the replay window");
			else if (backlog_bytes(c) > SSE_CLIENT_MAX_BACKLOG)
				client_cut(c, "it could not keep up");
		}
	}
}

/*
 * h2o does not read an HTTP/1 connection while its response streams, so a
 * client that went away is only noticed at the next write.  An idle client
 * whose peer closed is shut down and written to, which makes h2o dispose of
 * it now (and frees its slot of machpay.sse_max_clients).  HTTP/2
 * connections are read by h2o all along and need no check.
 */
static void
check_closed(SseClient *c)
{
	h2o_socket_t *sock;
	char		b;
	ssize_t		r;
	int			fd;

	if (c->req->version >= 0x200 || !c->req->conn->callbacks->get_socket)
		return;
	sock = c->req->conn->callbacks->get_socket(c->req->conn);
	if (sock == NULL)
		return;
	fd = h2o_socket_get_fd(sock);
	r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
		return;
	(void) shutdown(fd, SHUT_RDWR);
	c->heartbeat_pending = true;
	client_pump(c);
}

void
sse_clients_tick(uint64 now_ms)
{
	dlist_mutable_iter iter;
	bool		heartbeat = false;
	bool		check = false;

	if (machpay_sse_heartbeat_interval_ms > 0 &&
		now_ms - last_heartbeat_ms >= (uint64) machpay_sse_heartbeat_interval_ms)
	{
		heartbeat = true;
		last_heartbeat_ms = now_ms;
	}
	if (now_ms - last_check_ms >= SSE_CLIENT_CHECK_MS)
	{
		check = true;
		last_check_ms = now_ms;
	}
	if (!heartbeat && !check)
		return;
	dlist_foreach_modify(iter, &clients)
	{
		SseClient  *c = dlist_container(SseClient, node, iter.cur);

		if (heartbeat)
		{
			c->heartbeat_pending = true;
			client_pump(c);
		}
		else if (c->state == SSE_CLIENT_IDLE)
			check_closed(c);
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
handle_stream(h2o_req_t *req)
{
	char	   *token = NULL;
	char	   *key_entity = NULL;
	char	   *entity = query_param(req, "entity");
	char	   *types = query_param(req, "types");
	char	   *last_id = header_value(req, NULL, "last-event-id");
	SseClient  *c;
	uint64		head = sse_window_next_seq();

	if (machpay_auth)
	{
		char	   *auth = header_value(req, H2O_TOKEN_AUTHORIZATION, NULL);

		if (auth && pg_strncasecmp(auth, "bearer ", 7) == 0)
		{
			token = auth + 7;
			while (*token == ' ')
				token++;
		}
		if (token == NULL || *token == '\0')
			token = query_param(req, "access_token");
		switch (sse_keys_check(token, token ? strlen(token) : 0, &key_entity))
		{
			case SSE_AUTH_OK:
				break;
			case SSE_AUTH_MISSING:
				send_error(req, 401, "Unauthorized", "unauthorized", "a console key is required");
				return;
			case SSE_AUTH_UNKNOWN:
				send_error(req, 401, "Unauthorized", "unauthorized", "unknown or revoked key");
				return;
			case SSE_AUTH_WRONG_ROLE:
				send_error(req, 403, "Forbidden", "forbidden", "an ingest key cannot read the stream; use a console key");
				return;
			case SSE_AUTH_NOT_LOADED:
				send_error(req, 503, "Service Unavailable", "not_ready", "the relay has not read the keys yet");
				return;
		}
		/* A key bound to one entity sees that entity only. */
		if (strcmp(key_entity, "*") != 0)
		{
			if (entity && strcmp(entity, key_entity) != 0)
			{
				send_error(req, 403, "Forbidden", "entity_not_allowed", "the key is bound to another entity");
				return;
			}
			entity = key_entity;
		}
	}
	if (nclients >= machpay_sse_max_clients)
	{
		send_error(req, 503, "Service Unavailable", "too_many_clients", "machpay.sse_max_clients reached");
		return;
	}
	if (last_id == NULL)
		last_id = query_param(req, "last_event_id");

	c = MemoryContextAllocZero(clients_cxt, sizeof(SseClient));
	c->generator.proceed = client_proceed;
	c->generator.stop = client_stop;
	c->req = req;
	c->state = SSE_CLIENT_IDLE;
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

	req->res.status = 200;
	req->res.reason = "OK";
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
				   H2O_STRLIT("text/event-stream; charset=utf-8"));
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
				   H2O_STRLIT("no-cache"));
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL,
						  H2O_STRLIT("no"));
	add_cors(req);
	h2o_start_response(req, &c->generator);
	client_pump(c);
}

static void
handle_console(h2o_req_t *req)
{
	size_t		len;
	const char *page = sse_console_page(&len);

	req->res.status = 200;
	req->res.reason = "OK";
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
				   H2O_STRLIT("text/html; charset=utf-8"));
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
				   H2O_STRLIT("no-cache"));
	h2o_send_inline(req, page, len);
}

static int
on_req(h2o_handler_t *self, h2o_req_t *req)
{
	h2o_iovec_t path = req->path_normalized;
	bool		is_get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
		h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
	MemoryContext old = MemoryContextSwitchTo(request_cxt);

	if (h2o_memis(path.base, path.len, H2O_STRLIT("/v1/stream")))
	{
		if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")))
			handle_stream(req);
		else if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")))
		{
			/* CORS preflight, for pages that send the key as a header. */
			req->res.status = 204;
			req->res.reason = "No Content";
			add_cors(req);
			h2o_add_header_by_str(&req->pool, &req->res.headers,
								  H2O_STRLIT("access-control-allow-headers"), 0, NULL,
								  H2O_STRLIT("Authorization, Last-Event-ID"));
			h2o_add_header_by_str(&req->pool, &req->res.headers,
								  H2O_STRLIT("access-control-allow-methods"), 0, NULL,
								  H2O_STRLIT("GET"));
			h2o_send_inline(req, "", 0);
		}
		else
			send_error(req, 405, "Method Not Allowed", "method_not_allowed", "use GET");
	}
	else if (h2o_memis(path.base, path.len, H2O_STRLIT("/")) ||
			 h2o_memis(path.base, path.len, H2O_STRLIT("/index.html")))
	{
		if (is_get)
			handle_console(req);
		else
			send_error(req, 405, "Method Not Allowed", "method_not_allowed", "use GET");
	}
	else
		send_error(req, 404, "Not Found", "not_found", "no such path; the stream is GET /v1/stream");

	MemoryContextSwitchTo(old);
	MemoryContextReset(request_cxt);
	return 0;
}

void
sse_clients_init(h2o_globalconf_t *config)
{
	h2o_hostconf_t *hostconf;
	h2o_pathconf_t *pathconf;
	h2o_handler_t *handler;

	clients_cxt = AllocSetContextCreate(TopMemoryContext, "machpay sse clients",
										ALLOCSET_DEFAULT_SIZES);
	request_cxt = AllocSetContextCreate(TopMemoryContext, "machpay sse request",
										ALLOCSET_DEFAULT_SIZES);
	hostconf = h2o_config_register_host(config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	pathconf = h2o_config_register_path(hostconf, "/", 0);
	handler = h2o_create_handler(pathconf, sizeof(*handler));
	handler->on_req = on_req;
}
