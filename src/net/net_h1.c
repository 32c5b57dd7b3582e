/*-------------------------------------------------------------------------
 * net_h1.c
 *	  HTTP/1.1 connections: keep-alive and pipelining, one request at a
 *	  time, parsed by h1_parser.c.
 *
 * The parser pauses at the end of each head; the handler then decides with
 * no body byte read.  A refused request with a small declared body keeps
 * its connection: the answer goes out at once and the body is read and
 * dropped; so does one that waits for 100 Continue and sent no body byte
 * (no 100 goes out; see skip_refused_body).  A refused chunked or large body, a request smuggling attempt
 * (Content-Length with Transfer-Encoding) and every protocol error close
 * the connection after the answer.  Later pipelined requests wait in the
 * input buffer until the current one is answered, so answers keep their
 * order.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "net/h1_parser.h"
#include "net/net_int.h"

/* A refused body up to this size is read and dropped, not a reason to close. */
#define H1_DISCARD_MAX		(256 * 1024)

typedef struct H1State
{
	NetConn    *conn;
	H1Parser   *parser;
	NetRequest *req;			/* the request being read or answered */
	size_t		head_bytes;
	bool		keep_alive;
	bool		head_bytes_seen;	/* a byte of the next request arrived */
	bool		expect_continue;	/* the client waits for 100 to send its body */
	int64_t		skip_body;		/* body of a refused Expect request, not sent */
	bool		discarding;		/* answered: its body is read and dropped */
	int64_t		drop_left;		/* refused body bytes to drop before the next
								 * request (unread where the socket allows) */
	bool		body_done;		/* the parser saw the end of the message */
	int			error_status;	/* set by a callback: answer this and close */
	const char *error_code;
	const char *error_message;
} H1State;

static void
set_error(H1State *st, int status, const char *code, const char *message)
{
	if (st->error_status == 0)
	{
		st->error_status = status;
		st->error_code = code;
		st->error_message = message;
	}
}

static bool
count_head(H1State *st, size_t n)
{
	st->head_bytes += n;
	if (st->head_bytes > (size_t) st->conn->limits->max_header_bytes)
	{
		set_error(st, 431, "headers_too_large", "the request head is too large");
		return false;
	}
	return true;
}

static bool
cb_target(void *ctx, const char *at, size_t len)
{
	H1State    *st = ctx;

	if (st->req == NULL)
	{
		st->req = calloc(1, sizeof(NetRequest));
		if (st->req == NULL)
			return false;
		st->req->conn = st->conn;
		st->req->content_length = -1;
	}
	if (!count_head(st, len))
		return false;
	return net_req_set_path(st->req, at, len);
}

static bool
cb_header(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
	H1State    *st = ctx;

	if (st->req == NULL || !count_head(st, nlen + vlen + 4))
		return false;
	while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
		vlen--;
	if (!net_req_add_header(st->req, name, nlen, value, vlen))
	{
		set_error(st, 500, "internal_error", "out of memory");
		return false;
	}
	return true;
}

static bool
cb_head(void *ctx, const H1Head *head)
{
	H1State    *st = ctx;
	NetRequest *req = st->req;
	size_t		len;
	const char *te;

	if (req == NULL)
		return false;
	strlcpy(req->method, head->method, sizeof(req->method));
	req->head = strcmp(req->method, "HEAD") == 0;
	req->content_length = head->content_length;
	req->has_body = head->chunked || head->content_length > 0;
	st->keep_alive = head->keep_alive;
	st->body_done = !req->has_body;

	/* Only "chunked" alone: any other coding leaves the length unknown. */
	te = net_header(req, "transfer-encoding", &len);
	if (te != NULL && !(len == 7 && pg_strncasecmp(te, "chunked", 7) == 0))
		set_error(st, 400, "bad_request", "unsupported Transfer-Encoding");
	te = net_header(req, "expect", &len);
	st->expect_continue = te != NULL && len == 12 && pg_strncasecmp(te, "100-continue", 12) == 0;
	req->state = NET_REQ_DECIDING;
	st->conn->head_started_ms = 0;
	return false;				/* pause: the handler decides first */
}

static bool
cb_body(void *ctx, const char *at, size_t len)
{
	H1State    *st = ctx;

	if (st->req == NULL || st->discarding)
		return true;
	net_body_append(st->req, at, len);
	/* Past the limit or corrupt: stop reading, the answer closes. */
	return st->req->body_status == NET_BODY_OK;
}

static bool
cb_done(void *ctx)
{
	H1State    *st = ctx;

	st->body_done = true;
	return false;				/* one message at a time */
}

static const H1Callbacks h1_callbacks = {
	cb_target, cb_header, cb_head, cb_body, cb_done
};

bool
net_h1_start(NetConn *conn)
{
	H1State    *st = calloc(1, sizeof(H1State));

	if (st == NULL)
		return false;
	st->conn = conn;
	st->parser = h1_parser_create(&h1_callbacks, st);
	if (st->parser == NULL)
	{
		free(st);
		return false;
	}
	conn->proto = NET_PROTO_H1;
	conn->proto_state = st;
	return true;
}

static void
drop_request(H1State *st)
{
	NetRequest *req = st->req;

	st->req = NULL;
	st->head_bytes = 0;
	st->head_bytes_seen = false;
	st->discarding = false;
	st->body_done = false;
	st->expect_continue = false;
	st->conn->busy = false;
	if (req == NULL)
		return;
	if (req->on_gone && req->user)
		req->on_gone(req);
	net_req_free(req);
}

void
net_h1_free(NetConn *conn)
{
	H1State    *st = conn->proto_state;

	if (st == NULL)
		return;
	drop_request(st);
	h1_parser_free(st->parser);
	free(st);
	conn->proto_state = NULL;
}

/* Answers a protocol error through the server (JSON, like every answer) and closes. */
static void
answer_error(H1State *st)
{
	net_conn_close_cause(st->conn, NET_CLOSE_PROTOCOL_ERROR);
	if (st->req == NULL)
	{
		st->req = calloc(1, sizeof(NetRequest));
		if (st->req == NULL)
		{
			net_conn_abort_for(st->conn, NET_CLOSE_ERROR);
			return;
		}
		st->req->conn = st->conn;
		st->req->content_length = -1;
	}
	if (st->req->path == NULL && !net_req_set_path(st->req, "", 0))
	{
		net_conn_abort_for(st->conn, NET_CLOSE_ERROR);
		return;
	}
	st->keep_alive = false;
	st->req->state = NET_REQ_HANDLER;
	st->conn->busy = true;
	st->conn->handler->on_error(st->req, st->error_status, st->error_code,
								st->error_message);
	if (st->req->state != NET_REQ_ANSWERED)
		net_conn_abort(st->conn);
	st->conn->closing = true;
}

/*
 * The head did not arrive within header_timeout, or the body stalled for
 * idle_timeout: 408 (JSON, like every answer) and close, once a byte of a
 * request came.  A connection that sent nothing of one is just closed.
 * header_timer: the head's timer expired, else the idle one.
 */
void
net_h1_timeout(NetConn *conn, bool header_timer)
{
	H1State    *st = conn->proto_state;
	int			state = st && st->req ? st->req->state : NET_REQ_HEADERS;

	if (state == NET_REQ_BODY)
		net_conn_close_cause(conn, NET_CLOSE_BODY_TIMEOUT);
	else
		net_conn_close_cause(conn, header_timer ? NET_CLOSE_HEADER_TIMEOUT : NET_CLOSE_IDLE);
	if (st == NULL || (st->req == NULL && !st->head_bytes_seen) ||
		(state != NET_REQ_HEADERS && state != NET_REQ_BODY))
	{
		net_conn_abort(conn);
		return;
	}
	if (state == NET_REQ_BODY)
		set_error(st, 408, "request_timeout", "the request body stalled");
	else
		set_error(st, 408, "request_timeout",
				  "the request head did not arrive within machpay.http_header_timeout");
	answer_error(st);
}

/*
 * After a refused request with Expect: 100-continue whose body had not
 * come: the next bytes are the next request (a method and a space), or the
 * body after all (a client that stopped waiting for 100 before our answer
 * came): a small one is dropped, a large one closes the connection.
 * Returns false when nothing is left to parse now.
 */
static bool
skip_refused_body(NetConn *conn, H1State *st)
{
	const char *in;
	size_t		avail;
	size_t		i = 0;
	size_t		n;

	/* the refused head's last line end, or empty lines */
	while (conn->in_off < conn->in_len &&
		   (conn->in[conn->in_off] == '\r' || conn->in[conn->in_off] == '\n'))
		conn->in_off++;
	in = conn->in + conn->in_off;
	avail = conn->in_len - conn->in_off;
	if (avail == 0)
	{
		conn->in_off = conn->in_len = 0;
		return false;
	}
	while (i < avail && i < 16 && in[i] >= 'A' && in[i] <= 'Z')
		i++;
	if (i == avail && i < 16)
		return false;			/* too early to tell */
	if (i > 0 && i < avail && in[i] == ' ')
	{
		st->skip_body = 0;
		return true;
	}
	if (st->skip_body > H1_DISCARD_MAX)
	{
		net_conn_close_cause(conn, NET_CLOSE_REFUSED_BODY);
		conn->closing = true;
		return false;
	}
	n = Min(avail, (size_t) st->skip_body);
	conn->in_off += n;
	st->skip_body -= n;
	if (conn->in_off == conn->in_len)
		conn->in_off = conn->in_len = 0;
	return conn->in_len > conn->in_off;
}

/* Feeds buffered input to the parser; false when it must stop here. */
static bool
parse_more(NetConn *conn, H1State *st)
{
	bool		failed;
	size_t		used;

	if (st->drop_left > 0 && st->req == NULL)
	{
		size_t		n = Min(conn->in_len - conn->in_off, (size_t) st->drop_left);

		conn->in_off += n;
		st->drop_left -= n;
		if (conn->in_off == conn->in_len)
			conn->in_off = conn->in_len = 0;
		if (st->drop_left > 0)
			return false;
	}
	if (conn->in_len == conn->in_off)
		return false;
	if (st->skip_body > 0 && st->req == NULL && !skip_refused_body(conn, st))
		return false;
	/* the empty lines a client may send between requests are no request */
	for (size_t i = conn->in_off; !st->head_bytes_seen && i < conn->in_len; i++)
		st->head_bytes_seen = conn->in[i] != '\r' && conn->in[i] != '\n';
	if (st->req == NULL && conn->head_started_ms == 0 && st->head_bytes_seen)
		conn->head_started_ms = net_now_ms();
	used = h1_parser_feed(st->parser, conn->in + conn->in_off,
						  conn->in_len - conn->in_off, &failed);
	conn->in_off += used;
	if (conn->in_off == conn->in_len)
		conn->in_off = conn->in_len = 0;
	if (st->error_status == 0 && failed)
		set_error(st, 400, "bad_request", h1_parser_error(st->parser));
	if (st->error_status != 0)
	{
		answer_error(st);
		return false;
	}
	if (st->req == NULL && conn->in_len > conn->in_off && used == 0)
		return false;
	return used > 0;
}

/* A body ended (or broke): hand the request back to the handler. */
static void
body_complete(NetConn *conn, H1State *st)
{
	NetRequest *req = st->req;

	if (req->body_status == NET_BODY_OK)
		net_body_finish(req);
	req->state = NET_REQ_HANDLER;
	conn->busy = true;
	conn->handler->on_body(req);
}

/*
 * Moves the connection on as far as it goes: runs the handler on a
 * complete head or body, reads on, and starts the next request once the
 * answer is queued.  Called by the loop after reads and when kicked.
 */
void
net_h1_process(NetConn *conn)
{
	H1State    *st = conn->proto_state;

	while (!conn->dead && !conn->closing)
	{
		NetRequest *req = st->req;

		if (req != NULL && req->state == NET_REQ_DECIDING)
		{
			req->state = NET_REQ_HANDLER;
			conn->busy = true;
			conn->handler->on_headers(req);
			continue;
		}
		if (req != NULL && req->state == NET_REQ_BODY)
		{
			if (req->body_status != NET_BODY_OK || st->body_done)
			{
				body_complete(conn, st);
				continue;
			}
			if (!parse_more(conn, st))
				break;
			continue;
		}
		if (req != NULL && req->state == NET_REQ_ANSWERED)
		{
			if (req->streaming && !req->finished)
			{
				if (conn->out_len == conn->out_off && req->on_drained && req->user)
					req->on_drained(req);
				break;
			}
			if (!st->keep_alive)
			{
				conn->closing = true;
				break;
			}
			if (!st->body_done && !st->discarding &&
				(st->drop_left = h1_parser_body_left(st->parser)) >= 0)
			{
				/*
				 * Answered before its body: the rest is dropped as a count
				 * of bytes (net_h1_drop_left), the parser starts afresh
				 * after it.  The head's last line feed, left by the
				 * parser's pause, is no body byte.
				 */
				if (conn->in_off < conn->in_len && conn->in[conn->in_off] == '\n')
					conn->in_off++;
				h1_parser_reset(st->parser);
				st->body_done = true;
			}
			if (!st->body_done)
			{
				/* answered before a chunked body: read and drop the rest */
				st->discarding = true;
				if (!parse_more(conn, st))
					break;
				continue;
			}
			drop_request(st);
			continue;
		}
		if (req != NULL && req->state == NET_REQ_HANDLER)
			break;				/* waiting for the handler's answer */
		/* a client that pipelines without reading its answers waits */
		if (req == NULL && conn->out_len - conn->out_off > conn->limits->max_output)
			break;
		if (!parse_more(conn, st))
			break;
	}
}

/*
 * The loop's side of a refused body being dropped: how many bytes are left
 * (it drops them unread from the socket once the input buffer is empty),
 * and whether the connection waits for the head of its next request, which
 * the loop reads in a small first piece so that the body of a request
 * refused at its head mostly stays in the socket, to be dropped unread.
 */
size_t
net_h1_drop_left(NetConn *conn)
{
	H1State    *st = conn->proto_state;

	return st->req == NULL && st->drop_left > 0 ? (size_t) st->drop_left : 0;
}

void
net_h1_dropped(NetConn *conn, size_t n)
{
	H1State    *st = conn->proto_state;

	st->drop_left -= Min((int64_t) n, st->drop_left);
}

bool
net_h1_between_requests(NetConn *conn)
{
	H1State    *st = conn->proto_state;

	return st->req == NULL && st->drop_left == 0 && st->skip_body == 0;
}

/* Not a byte of a request in progress: an idle keep-alive connection. */
bool
net_h1_idle(NetConn *conn)
{
	H1State    *st = conn->proto_state;

	return net_h1_between_requests(conn) && !st->head_bytes_seen;
}

/* The handler wants the body: read it (100 Continue if the client waits). */
void
net_h1_read_body(NetRequest *req)
{
	H1State    *st = req->conn->proto_state;

	if (st->expect_continue)
	{
		static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";

		(void) net_conn_write(req->conn, cont, sizeof(cont) - 1);
		st->expect_continue = false;
	}
	/* while the body comes, a stalled upload times out like an idle one */
	req->conn->busy = false;
	net_conn_kick(req->conn);
}

/* Writes the status line and headers; the body or chunks follow. */
static void
write_head(NetConn *conn, NetRequest *req, int status, const char *const *headers,
		   size_t len, bool stream, bool close)
{
	char		line[256];
	int			n;

	n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, net_status_reason(status));
	(void) net_conn_write(conn, line, n);
	for (int i = 0; headers && headers[i]; i += 2)
	{
		(void) net_conn_write(conn, headers[i], strlen(headers[i]));
		(void) net_conn_write(conn, ": ", 2);
		(void) net_conn_write(conn, headers[i + 1], strlen(headers[i + 1]));
		(void) net_conn_write(conn, "\r\n", 2);
	}
	if (stream)
		n = snprintf(line, sizeof(line), "transfer-encoding: chunked\r\n");
	else
		n = snprintf(line, sizeof(line), "content-length: %zu\r\n", len);
	(void) net_conn_write(conn, line, n);
	if (close)
		(void) net_conn_write(conn, "connection: close\r\n", 19);
	(void) net_conn_write(conn, "\r\n", 2);
}

/*
 * Whether a body byte follows the head in the input (the parser leaves the
 * head's last line feed unused when it pauses there).
 */
static bool
body_byte_came(NetConn *conn)
{
	for (size_t i = conn->in_off; i < conn->in_len; i++)
	{
		if (conn->in[i] != '\r' && conn->in[i] != '\n')
			return true;
	}
	return false;
}

void
net_h1_respond(NetRequest *req, int status, const char *const *headers,
			   const char *body, size_t len, bool stream)
{
	NetConn    *conn = req->conn;
	H1State    *st = conn->proto_state;

	/*
	 * Answered before the body was read: a client that waits for 100 and
	 * sent no body byte yet need not send it (no 100 goes out), and the
	 * connection stays; otherwise a small declared body is dropped as it
	 * comes and the connection stays; anything else closes it.
	 */
	if (!st->keep_alive)
		net_conn_close_cause(conn, NET_CLOSE_CLIENT_ASKED);
	if (conn->closing || net_is_draining())
	{
		st->keep_alive = false;
		net_conn_close_cause(conn, NET_CLOSE_SHUTDOWN);
	}
	if (req->state == NET_REQ_HANDLER && !st->body_done && req->body == NULL)
	{
		if (st->expect_continue && req->content_length >= 0 && !body_byte_came(conn))
		{
			st->skip_body = req->content_length;
			st->body_done = true;
			h1_parser_reset(st->parser);
		}
		else if (req->content_length < 0 || req->content_length > H1_DISCARD_MAX)
		{
			st->keep_alive = false;
			net_conn_close_cause(conn, NET_CLOSE_REFUSED_BODY);
		}
	}
	else if (!st->body_done || req->body_status != NET_BODY_OK)
	{
		st->keep_alive = false;
		net_conn_close_cause(conn, req->body_status == NET_BODY_OK ?
							 NET_CLOSE_REFUSED_BODY : NET_CLOSE_PROTOCOL_ERROR);
	}

	write_head(conn, req, status, headers, len, stream, !st->keep_alive);
	if (!req->head && !stream)
		(void) net_conn_write(conn, body, len);
	req->state = NET_REQ_ANSWERED;
	req->streaming = stream;
	req->finished = !stream;
	if (!st->keep_alive && !stream)
		conn->closing = true;
	net_conn_kick(conn);
}

void
net_h1_stream_write(NetRequest *req, const char *data, size_t len)
{
	char		size[32];
	int			n;

	if (req->head)
		return;
	if (len == 0)
	{
		/* the last chunk, once the answer is finished */
		if (req->finished)
			(void) net_conn_write(req->conn, "0\r\n\r\n", 5);
		return;
	}
	n = snprintf(size, sizeof(size), "%zx\r\n", len);
	(void) net_conn_write(req->conn, size, n);
	(void) net_conn_write(req->conn, data, len);
	(void) net_conn_write(req->conn, "\r\n", 2);
}
