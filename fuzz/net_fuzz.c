/*-------------------------------------------------------------------------
 * net_fuzz.c
 *	  libFuzzer harness for the HTTP engine's protocol layers: bytes from a
 *	  client into one connection, HTTP/1.1 (net_h1.c, h1_parser.c) or, built
 *	  with -DNET_FUZZ_H2, HTTP/2 (net_h2.c on nghttp2), with net_body.c and
 *	  net_reply.c behind them.
 *
 * No socket: the connection is a NetConn whose input buffer the harness
 * fills and whose output it empties, turn by turn as the loop
 * (net_loop.c) does: append a read, process, then process every kicked
 * connection until nothing moves.  The handler makes the ingest
 * endpoint's head decisions in their order (503, 401, 411, 413, 415, 429,
 * then the body with a limit), decided by the input's first byte and the
 * request's headers, so that every refusal-before-the-body path, body
 * reading with gzip, and streaming answers are driven.
 *
 * Input: byte 0 selects the handler's mood (bits 0-1: refuse 503/401/429
 * or read, bit 2: leave output unsent so max_output is reached, bit 3: the
 * server is draining, bits 4-7: size of each read).  The rest is what the client sends; on HTTP/2 the
 * client preface is prepended.  The rest of a refused HTTP/1.1 body is
 * dropped from the input as the loop drops it unread from the socket; when
 * the last byte is odd, the timers expire at the end (408, stream resets;
 * bit 0 of the mood: the head's timer, else the idle one).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "net_int.h"			/* from the engine's directory */

#define FUZZ_MAX_BODY	4096
#define FUZZ_MAX_TURNS	64

#ifdef NET_FUZZ_H2
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#endif

static NetLimits fuzz_limits = {
	.max_connections = 8,
	.header_timeout_ms = 10000,
	.idle_timeout_ms = 10000,
	.max_header_bytes = 4096,
	.h2_max_streams = 8,
	.h2_max_resets = 16,
	.h2_max_control = 64,
	.max_output = 32768
};

static int	mood;

static void
reply(NetRequest *req, int status, const char *code)
{
	static const char *const hdrs[] = {"content-type", "application/json", NULL};
	char		body[128];
	int			n;

	n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", code);
	net_respond(req, status, hdrs, body, n);
}

static bool
header_is(NetRequest *req, const char *name, const char *want)
{
	size_t		len;
	const char *v = net_header(req, name, &len);

	return v != NULL && len >= strlen(want) && pg_strncasecmp(v, want, strlen(want)) == 0;
}

static void
stream_gone(NetRequest *req)
{
	req->user = NULL;
}

static void
on_headers(NetRequest *req)
{
	size_t		len;
	const char *enc;

	if (req->path == NULL)
		abort();
	if ((mood & 3) == 1)
	{
		reply(req, 503, "not_ready");
		return;
	}
	if ((mood & 3) == 2 && net_header(req, "authorization", &len) == NULL)
	{
		reply(req, 401, "unauthorized");
		return;
	}
	/* an event stream: an answer of unknown length, written in pieces */
	if (strcmp(req->path, "/v1/stream") == 0)
	{
		static const char *const hdrs[] = {"content-type", "text/event-stream", NULL};

		net_stream_start(req, 200, hdrs);
		req->user = req;
		req->on_gone = stream_gone;
		net_stream_write(req, ": hello\n\n", 9);
		net_stream_write(req, "id: 1\ndata: {}\n\n", 16);
		if (req->query != NULL)
			net_stream_cut(req);
		return;
	}
	if (!req->has_body && req->content_length < 0)
	{
		reply(req, 411, "length_required");
		return;
	}
	if (req->content_length > FUZZ_MAX_BODY)
	{
		reply(req, 413, "too_large");
		return;
	}
	if (!header_is(req, "content-type", "application/json"))
	{
		reply(req, 415, "unsupported_media_type");
		return;
	}
	enc = net_header(req, "content-encoding", &len);
	if (enc != NULL && !header_is(req, "content-encoding", "gzip") &&
		!header_is(req, "content-encoding", "identity"))
	{
		reply(req, 415, "unsupported_encoding");
		return;
	}
	if ((mood & 3) == 3)
	{
		reply(req, 429, "overloaded");
		return;
	}
	net_read_body(req, FUZZ_MAX_BODY);
}

static void
on_body(NetRequest *req)
{
	char		body[64];
	int			n;

	switch (req->body_status)
	{
		case NET_BODY_OK:
			if (req->body_len > FUZZ_MAX_BODY || (req->body_len > 0 && req->body == NULL))
				abort();
			n = snprintf(body, sizeof(body), "{\"bytes\":%zu}", req->body_len);
			net_respond(req, 200, NULL, body, n);
			break;
		case NET_BODY_TOO_LARGE:
			reply(req, 413, "too_large");
			break;
		case NET_BODY_BAD_ENCODING:
			reply(req, 400, "bad_encoding");
			break;
		case NET_BODY_BROKEN:
			reply(req, 400, "bad_request");
			break;
	}
}

static void
on_error(NetRequest *req, int status, const char *code, const char *message)
{
	if (status < 400 || status > 599)
		abort();
	reply(req, status, code);
}

static const NetHandler fuzz_handler = {on_headers, on_body, on_error};

/*
 * net_loop.c's answer to "is the worker shutting down?", for the layers
 * that ask it (bit 3 of the mood says yes).
 */
bool		net_is_draining(void);

bool
net_is_draining(void)
{
	return (mood & 8) != 0;
}

/* What net_loop.c's conn_finish_turn does, with the socket write faked. */
static void
finish_turn(NetConn *conn)
{
	NetConn    *c;
	int			turns = 0;

	while ((c = net_conn_take_kicked()) != NULL && turns++ < FUZZ_MAX_TURNS)
	{
		if (c != conn)
			abort();
		for (int pass = 0; pass < 2 && !conn->dead; pass++)
		{
			size_t		before = conn->out_len - conn->out_off;

			if (conn->proto == NET_PROTO_H1)
				net_h1_process(conn);
			else if (conn->proto == NET_PROTO_H2)
				net_h2_process(conn);
			if (conn->out_len > conn->out_cap || conn->out_off > conn->out_len)
				abort();
			if (!(mood & 4))
				conn->out_off = conn->out_len = 0;
			if (!(conn->out_len == 0 && before > 0))
				break;
		}
	}
	while (net_conn_take_kicked() != NULL)
		;
}

/* One read of n bytes arriving, as conn_read does it. */
static void
read_bytes(NetConn *conn, const char *data, size_t n)
{
	if (conn->in_off > 0)
	{
		memmove(conn->in, conn->in + conn->in_off, conn->in_len - conn->in_off);
		conn->in_len -= conn->in_off;
		conn->in_off = 0;
	}
	if (!net_buf_reserve(&conn->in, &conn->in_cap, conn->in_len, n))
		abort();
	memcpy(conn->in + conn->in_len, data, n);
	conn->in_len += n;
	if (conn->proto == NET_PROTO_UNKNOWN)
	{
#ifdef NET_FUZZ_H2
		if (!net_h2_start(conn))
			abort();
#else
		if (!net_h1_start(conn))
			abort();
#endif
	}
	if (conn->proto == NET_PROTO_H1)
		net_h1_process(conn);
	else
		net_h2_process(conn);
	net_conn_kick(conn);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	NetConn    *conn;
	size_t		chunk;
	size_t		off = 0;

	if (size < 1)
		return 0;
	mood = data[0];
	chunk = (mood >> 4) == 0 ? size : (size_t) (mood >> 4) * 7;
	data++;
	size--;

	conn = calloc(1, sizeof(NetConn));
	conn->fd = -1;
	conn->handshake_done = true;
	conn->handler = &fuzz_handler;
	conn->limits = &fuzz_limits;

#ifdef NET_FUZZ_H2
	read_bytes(conn, h2_preface, sizeof(h2_preface) - 1);
	finish_turn(conn);
#endif
	while (off < size && !conn->dead && !conn->closing)
	{
		size_t		n = Min(chunk, size - off);

		read_bytes(conn, (const char *) data + off, n);
		finish_turn(conn);
		off += n;
#ifndef NET_FUZZ_H2
		/* a refused body's rest, dropped unread as conn_read does it */
		if (!conn->dead && conn->in_len == conn->in_off && net_h1_drop_left(conn) > 0)
		{
			size_t		d = Min(net_h1_drop_left(conn), size - off);

			net_h1_dropped(conn, d);
			off += d;
			finish_turn(conn);
		}
#endif
	}
	/* the last byte's low bit: the timers expire (408, resets) */
	if (size > 0 && !conn->dead && !conn->closing && conn->proto != NET_PROTO_UNKNOWN &&
		(data[size - 1] & 1))
	{
#ifdef NET_FUZZ_H2
		(void) net_h2_timeouts(conn, INT64_MAX / 2);
#else
		net_h1_timeout(conn, (mood & 1) != 0);
#endif
		net_conn_kick(conn);
		finish_turn(conn);
	}
	if (!conn->dead && conn->proto != NET_PROTO_UNKNOWN)
	{
		/* the peer closed: an HTTP/1.1 message may end there */
		conn->peer_eof = true;
		net_conn_kick(conn);
		finish_turn(conn);
	}

	if (conn->proto == NET_PROTO_H1)
		net_h1_free(conn);
	else if (conn->proto == NET_PROTO_H2)
		net_h2_free(conn);
	free(conn->in);
	free(conn->out);
	free(conn);
	return 0;
}
