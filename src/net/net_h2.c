/*-------------------------------------------------------------------------
 * net_h2.c
 *	  HTTP/2 connections on nghttp2's session API, which does no I/O: the
 *	  loop's bytes go in with nghttp2_session_mem_recv and frames come out
 *	  with nghttp2_session_mem_send into the connection's output.
 *
 * Flow control is ours (automatic WINDOW_UPDATE off): a stream's initial
 * window is machpay.http2_body_preread, what a client may send of a body
 * before its head is decided; DATA that arrives before the decision is held
 * and given back only once the handler asked for the body, whose window
 * then opens to H2_STREAM_WINDOW.  A stream answered
 * before its body ended (every refusal) gets its complete answer, then
 * RST_STREAM NO_ERROR (RFC 9113 §8.1: the client stops sending and keeps
 * the answer); its window never opens, and what DATA it already sent is
 * given back to the connection only, so other streams do not stall.
 *
 * Abuse limits, each closing the connection with GOAWAY ENHANCE_YOUR_CALM:
 * streams reset by the client (Rapid Reset), header blocks larger than
 * max_header_bytes or split into too many CONTINUATION frames, and too
 * many SETTINGS/PING/WINDOW_UPDATE/PRIORITY/empty DATA frames, all
 * counted per connection over H2_ABUSE_WINDOW_MS.  Streams are capped by
 * SETTINGS_MAX_CONCURRENT_STREAMS (nghttp2 refuses the excess); a reader
 * that opens no window holds at most max_output bytes and times out.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <nghttp2/nghttp2.h>

#include "net/net_int.h"

#define H2_ABUSE_WINDOW_MS		10000
#define H2_MAX_CONTINUATIONS	32
#define H2_MAX_RESPONSE_HEADERS	16
#define H2_CONNECTION_WINDOW	(1024 * 1024)
#define H2_STREAM_WINDOW		65535	/* of a stream whose body is read */

typedef struct H2State
{
	NetConn    *conn;
	nghttp2_session *session;
	NetRequest *streams;		/* open streams with a request */
	int			nstreams;
	NetRequest *ready_head;		/* requests for the handler */
	NetRequest *ready_tail;
	NetRequest *gone;			/* closed streams, freed after mem_recv */
	size_t		conn_unconsumed;	/* dropped DATA: give back to the connection */
	int64_t		window_start_ms;
	int			resets;
	int			control_frames;
	int			continuations;	/* of the header block being read */
	size_t		block_bytes;
	uint32_t	calm_code;		/* nonzero: GOAWAY with it, then close */
	bool		refused_pending;	/* a REFUSED_STREAM reset waits to go out */
	int32_t		preread;		/* the initial stream window we advertised */
	bool		settings_acked; /* the client acknowledged our SETTINGS */
	size_t		preface_left;	/* client magic bytes still to come */
	size_t		frame_left;		/* bytes of the current frame still to come */
	unsigned char hdr[9];		/* frame header being gathered */
	size_t		hdr_have;
} H2State;

static H2State *
state_of(NetConn *conn)
{
	return conn->proto_state;
}

static void
push_ready(H2State *st, NetRequest *req)
{
	if (req->in_ready)
		return;
	req->in_ready = true;
	req->next_ready = NULL;
	if (st->ready_tail)
		st->ready_tail->next_ready = req;
	else
		st->ready_head = req;
	st->ready_tail = req;
}

static void
unlink_stream(H2State *st, NetRequest *req)
{
	if (req->prev_stream)
		req->prev_stream->next_stream = req->next_stream;
	else
		st->streams = req->next_stream;
	if (req->next_stream)
		req->next_stream->prev_stream = req->prev_stream;
	req->prev_stream = req->next_stream = NULL;
	st->nstreams--;
}

/* Counts one event of a kind over the window; true past its limit. */
static bool
over_limit(H2State *st, int *counter, int limit)
{
	int64_t		now = net_now_ms();

	if (now - st->window_start_ms > H2_ABUSE_WINDOW_MS)
	{
		st->window_start_ms = now;
		st->resets = 0;
		st->control_frames = 0;
	}
	return ++(*counter) > limit;
}

static int
calm_down(H2State *st)
{
	if (st->calm_code == 0)
		st->calm_code = NGHTTP2_ENHANCE_YOUR_CALM;
	return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* ---- callbacks: record only ---- */

static int
on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user)
{
	H2State    *st = user;
	const NetLimits *lim = st->conn->limits;

	switch (hd->type)
	{
		case NGHTTP2_HEADERS:
			st->continuations = 0;
			st->block_bytes = hd->length;
			break;
		case NGHTTP2_CONTINUATION:
			st->block_bytes += hd->length;
			if (++st->continuations > H2_MAX_CONTINUATIONS)
				return calm_down(st);
			break;
		case NGHTTP2_SETTINGS:
		case NGHTTP2_PING:
		case NGHTTP2_WINDOW_UPDATE:
		case NGHTTP2_PRIORITY:
			if (over_limit(st, &st->control_frames, lim->h2_max_control))
				return calm_down(st);
			break;
		case NGHTTP2_DATA:
			if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM) &&
				over_limit(st, &st->control_frames, lim->h2_max_control))
				return calm_down(st);
			break;
		default:
			break;
	}
	if ((hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_CONTINUATION) &&
		st->block_bytes > (size_t) lim->max_header_bytes)
		return calm_down(st);
	return 0;
}

static int
on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	H2State    *st = user;
	NetRequest *req;

	if (frame->hd.type != NGHTTP2_HEADERS ||
		frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	/*
	 * Our own stream limit, one under the advertised one: nghttp2 treats a
	 * stream over the advertised limit as a connection error, which would
	 * end the client's good streams too.  The reset goes out before the
	 * next frame is read (net_h2_process), so the count never reaches it.
	 */
	if (st->nstreams >= st->conn->limits->h2_max_streams)
	{
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
								  NGHTTP2_REFUSED_STREAM);
		st->refused_pending = true;
		return 0;
	}
	req = calloc(1, sizeof(NetRequest));
	if (req == NULL)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	req->conn = st->conn;
	req->stream_id = frame->hd.stream_id;
	req->content_length = -1;
	req->state = NET_REQ_HEADERS;
	req->started_ms = net_now_ms();
	req->next_stream = st->streams;
	if (st->streams)
		st->streams->prev_stream = req;
	st->streams = req;
	st->nstreams++;
	nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, req);
	return 0;
}

static int
on_header(nghttp2_session *session, const nghttp2_frame *frame,
		  const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen,
		  uint8_t flags, void *user)
{
	NetRequest *req;

	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	req = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	if (req == NULL || req->state != NET_REQ_HEADERS)
		return 0;
	if (nlen == 7 && memcmp(name, ":method", 7) == 0)
	{
		size_t		n = Min(vlen, sizeof(req->method) - 1);

		memcpy(req->method, value, n);
		req->method[n] = '\0';
		req->head = strcmp(req->method, "HEAD") == 0;
		return 0;
	}
	if (nlen == 5 && memcmp(name, ":path", 5) == 0)
		return net_req_set_path(req, (const char *) value, vlen) ? 0 :
			NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (nlen > 0 && name[0] == ':')
		return 0;
	if (nlen == 14 && memcmp(name, "content-length", 14) == 0)
	{
		int64_t		cl = 0;

		for (size_t i = 0; i < vlen && cl <= INT64_MAX / 10 - 10; i++)
			cl = cl * 10 + (value[i] - '0');
		req->content_length = cl;
	}
	return net_req_add_header(req, (const char *) name, nlen,
							  (const char *) value, vlen) ? 0 :
		NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static void
body_ended(H2State *st, NetRequest *req)
{
	req->body_gone = true;
	if (req->state == NET_REQ_BODY)
		push_ready(st, req);
}

static int
on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	H2State    *st = user;
	NetRequest *req;

	switch (frame->hd.type)
	{
		case NGHTTP2_HEADERS:
			req = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
			if (req == NULL)
				return 0;
			if (req->state == NET_REQ_HEADERS)
			{
				req->has_body = !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
				req->body_gone = !req->has_body;
				req->state = NET_REQ_DECIDING;
				push_ready(st, req);
			}
			else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
				body_ended(st, req);	/* trailers */
			break;
		case NGHTTP2_DATA:
			req = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
			if (req != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
				body_ended(st, req);
			break;
		case NGHTTP2_SETTINGS:
			if (frame->hd.flags & NGHTTP2_FLAG_ACK)
				st->settings_acked = true;
			break;
		case NGHTTP2_RST_STREAM:
			if (over_limit(st, &st->resets, st->conn->limits->h2_max_resets))
				return calm_down(st);
			break;
		default:
			break;
	}
	return 0;
}

static int
on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			  const uint8_t *data, size_t len, void *user)
{
	H2State    *st = user;
	NetRequest *req = nghttp2_session_get_stream_user_data(session, stream_id);

	if (req == NULL)
	{
		st->conn_unconsumed += len;
		return 0;
	}
	switch (req->state)
	{
		case NET_REQ_HEADERS:
		case NET_REQ_DECIDING:
		case NET_REQ_HANDLER:
			if (req->body == NULL && !req->body_refused)
			{
				/* Not decided yet: hold it, within the stream's window. */
				if (!net_buf_reserve(&req->raw, &req->raw_cap, req->raw_len, len))
					return NGHTTP2_ERR_CALLBACK_FAILURE;
				memcpy(req->raw + req->raw_len, data, len);
				req->raw_len += len;
				return 0;
			}
			break;
		case NET_REQ_BODY:
			if (req->body_status == NET_BODY_OK)
			{
				net_body_append(req, (const char *) data, len);
				req->unconsumed += len;
				req->last_data_ms = net_now_ms();
				if (req->body_status != NET_BODY_OK)
					push_ready(st, req);
				return 0;
			}
			break;
		default:
			break;
	}
	st->conn_unconsumed += len;
	return 0;
}

static int
on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	NetRequest *req;

	if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
		!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	req = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	/* Answered before the body: the client may stop sending it. */
	if (req != NULL && req->body_refused && !req->body_gone)
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
								  NGHTTP2_NO_ERROR);
	return 0;
}

static int
on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
				void *user)
{
	H2State    *st = user;
	NetRequest *req = nghttp2_session_get_stream_user_data(session, stream_id);

	if (req == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	/* Bytes held for it: back to the connection. */
	st->conn_unconsumed += req->raw_len + req->unconsumed;
	req->raw_len = req->unconsumed = 0;
	unlink_stream(st, req);
	req->next_stream = st->gone;
	st->gone = req;
	return 0;
}

static ssize_t
read_out(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
		 uint32_t *data_flags, nghttp2_data_source *source, void *user)
{
	NetRequest *req = source->ptr;
	size_t		n = Min(length, req->out_len - req->out_off);

	memcpy(buf, req->out + req->out_off, n);
	req->out_off += n;
	if (req->out_off == req->out_len)
	{
		req->out_off = req->out_len = 0;
		if (req->finished)
			*data_flags |= NGHTTP2_DATA_FLAG_EOF;
		else if (n == 0)
			return NGHTTP2_ERR_DEFERRED;
	}
	return n;
}

static void send_frames(NetConn *conn, H2State *st);

/* ---- the connection ---- */

bool
net_h2_start(NetConn *conn)
{
	H2State    *st = calloc(1, sizeof(H2State));
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	nghttp2_settings_entry iv[4];
	int			rc;

	if (st == NULL)
		return false;
	st->conn = conn;
	st->window_start_ms = net_now_ms();
	st->preface_left = NGHTTP2_CLIENT_MAGIC_LEN;
	if (nghttp2_session_callbacks_new(&cbs) != 0)
	{
		free(st);
		return false;
	}
	nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_option_new(&opt);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_outbound_ack(opt, 64);
	rc = nghttp2_session_server_new2(&st->session, cbs, st, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	if (rc != 0)
	{
		free(st);
		return false;
	}
	iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
	iv[0].value = conn->limits->h2_max_streams + 1;	/* see on_begin_headers */
	iv[1].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE;
	iv[1].value = conn->limits->max_header_bytes;
	iv[2].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH;
	iv[2].value = 0;
	/* what a client may send of a body before its head is decided */
	iv[3].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
	st->preread = conn->limits->h2_preread;	/* a reload does not change it */
	iv[3].value = st->preread;
	nghttp2_submit_settings(st->session, NGHTTP2_FLAG_NONE, iv, 4);
	/*
	 * A connection window larger than a stream's: streams' own windows
	 * bound what each may send, and dropped bodies cost fewer WINDOW_UPDATEs.
	 */
	nghttp2_session_set_local_window_size(st->session, NGHTTP2_FLAG_NONE, 0,
										  H2_CONNECTION_WINDOW);
	conn->proto = NET_PROTO_H2;
	conn->proto_state = st;
	return true;
}

static void
free_gone(H2State *st)
{
	while (st->gone)
	{
		NetRequest *req = st->gone;

		st->gone = req->next_stream;
		if (req->in_ready)
		{
			/* unlink from the ready list */
			NetRequest **pp = &st->ready_head;

			st->ready_tail = NULL;
			while (*pp)
			{
				if (*pp == req)
					*pp = req->next_ready;
				else
				{
					st->ready_tail = *pp;
					pp = &(*pp)->next_ready;
				}
			}
		}
		if (req->on_gone && req->user)
			req->on_gone(req);
		net_req_free(req);
	}
}

void
net_h2_free(NetConn *conn)
{
	H2State    *st = state_of(conn);

	if (st == NULL)
		return;
	nghttp2_session_del(st->session);	/* no callbacks from here */
	while (st->streams)
	{
		NetRequest *req = st->streams;

		unlink_stream(st, req);
		req->next_stream = st->gone;
		st->gone = req;
	}
	free_gone(st);
	free(st);
	conn->proto_state = NULL;
}

/* Runs the handler for each request whose head or body is complete. */
static void
run_ready(NetConn *conn, H2State *st)
{
	while (st->ready_head && !conn->dead)
	{
		NetRequest *req = st->ready_head;

		st->ready_head = req->next_ready;
		if (st->ready_head == NULL)
			st->ready_tail = NULL;
		req->in_ready = false;
		if (req->state == NET_REQ_DECIDING)
		{
			req->state = NET_REQ_HANDLER;
			conn->handler->on_headers(req);
			if (req->state == NET_REQ_ANSWERED && req->raw_len > 0)
			{
				st->conn_unconsumed += req->raw_len;
				req->raw_len = 0;
			}
		}
		else if (req->state == NET_REQ_BODY &&
				 (req->body_gone || req->body_status != NET_BODY_OK))
		{
			if (req->body_status == NET_BODY_OK)
				net_body_finish(req);
			req->state = NET_REQ_HANDLER;
			conn->handler->on_body(req);
		}
	}
}

/* Gives DATA bytes back: the stream's and the connection's windows. */
static void
give_back(H2State *st)
{
	for (NetRequest *req = st->streams; req; req = req->next_stream)
	{
		if (req->unconsumed > 0)
		{
			if (req->state == NET_REQ_BODY)
				nghttp2_session_consume(st->session, req->stream_id, req->unconsumed);
			else
				nghttp2_session_consume_connection(st->session, req->unconsumed);
			req->unconsumed = 0;
		}
	}
	if (st->conn_unconsumed > 0)
	{
		nghttp2_session_consume_connection(st->session, st->conn_unconsumed);
		st->conn_unconsumed = 0;
	}
}

/* Frames into the connection's output, up to its bound. */
static void
send_frames(NetConn *conn, H2State *st)
{
	while (!conn->dead && conn->out_len - conn->out_off < conn->limits->max_output)
	{
		const uint8_t *data;
		ssize_t		n = nghttp2_session_mem_send(st->session, &data);

		if (n < 0)
		{
			net_conn_abort_for(conn, NET_CLOSE_ERROR);
			return;
		}
		if (n == 0)
			break;
		(void) net_conn_write(conn, data, n);
	}
}

/*
 * Tells streaming answers whose bytes all left that they may write more,
 * and finds whether an answer is owed: a stream with its handler or with
 * output (a stream whose head or body is still coming is not; it times out
 * like an idle connection when the client stalls).
 */
static bool
notify_drained(NetConn *conn, H2State *st)
{
	bool		owed = false;
	bool		drained = conn->out_len == conn->out_off;

	for (NetRequest *req = st->streams; req; req = req->next_stream)
	{
		if (req->state == NET_REQ_HANDLER ||
			(req->state == NET_REQ_ANSWERED && !req->finished))
			owed = true;
		if (drained && req->state == NET_REQ_ANSWERED && req->streaming &&
			!req->finished && req->out_len == req->out_off &&
			req->on_drained && req->user)
			req->on_drained(req);
	}
	return owed;
}

/* How many of the avail bytes at in reach the end of the current frame. */
static size_t
to_frame_end(H2State *st, const unsigned char *in, size_t avail)
{
	size_t		take;

	if (st->preface_left > 0)
		return Min(avail, st->preface_left);
	if (st->frame_left > 0)
		return Min(avail, st->frame_left);
	/* at a frame boundary: gather the 9-byte header to learn the length */
	take = Min(avail, 9 - st->hdr_have);
	memcpy(st->hdr + st->hdr_have, in, take);
	if (st->hdr_have + take < 9)
	{
		st->hdr_have += take;
		return take;
	}
	st->frame_left = 9 + ((size_t) st->hdr[0] << 16 | (size_t) st->hdr[1] << 8 | st->hdr[2]) -
		st->hdr_have;
	st->hdr_have = 0;
	return Min(avail, st->frame_left);
}

/*
 * Feeds the input to the session one frame at a time, so that a reset
 * decided on one frame goes out before the next is read, and a request
 * whose head just completed is decided before its DATA frames are fed: a
 * refused body is then dropped as it is parsed, an accepted one goes
 * straight into the request's body (neither is held first).
 */
static void
feed(NetConn *conn, H2State *st)
{
	size_t		off = 0;

	while (off < conn->in_len && st->calm_code == 0 && !conn->dead)
	{
		size_t		n = to_frame_end(st, (unsigned char *) conn->in + off, conn->in_len - off);
		ssize_t		r = nghttp2_session_mem_recv(st->session,
												 (const uint8_t *) conn->in + off, n);

		if (r < 0)
		{
			if (st->calm_code == 0)
				st->calm_code = NGHTTP2_PROTOCOL_ERROR;
			break;
		}
		if (st->preface_left > 0)
			st->preface_left -= n;
		else if (st->frame_left > 0)
			st->frame_left -= n;
		off += n;
		if (st->refused_pending)
		{
			st->refused_pending = false;
			send_frames(conn, st);
		}
		if (st->ready_head != NULL)
		{
			free_gone(st);
			run_ready(conn, st);
		}
	}
	conn->in_len = 0;
}

/*
 * Feeds what was read to the session, runs handlers, gives windows back
 * and frames the answers.  Called by the loop after reads and when kicked.
 */
void
net_h2_process(NetConn *conn)
{
	H2State    *st = state_of(conn);

	if (conn->in_len > 0 && st->calm_code == 0)
		feed(conn, st);
	if (st->calm_code != 0)
	{
		net_conn_close_cause(conn, st->calm_code == NGHTTP2_ENHANCE_YOUR_CALM ?
							 NET_CLOSE_ABUSE : NET_CLOSE_PROTOCOL_ERROR);
		nghttp2_session_terminate_session(st->session, st->calm_code);
		free_gone(st);
		send_frames(conn, st);
		conn->closing = true;
		return;
	}
	free_gone(st);
	run_ready(conn, st);
	free_gone(st);
	give_back(st);
	send_frames(conn, st);
	conn->busy = notify_drained(conn, st);
	if (!nghttp2_session_want_read(st->session) &&
		!nghttp2_session_want_write(st->session))
	{
		/* GOAWAY both ways: ours (draining) or the client's */
		net_conn_close_cause(conn, net_is_draining() ? NET_CLOSE_SHUTDOWN : NET_CLOSE_PEER);
		conn->closing = true;
	}
}

/*
 * Opens a stream's window to H2_STREAM_WINDOW, counting as the client
 * does.  The client applies our SETTINGS before any frame that follows
 * them, so its stream windows start from the preread at once; nghttp2
 * applies them only when the client acknowledges them, and until then
 * counts a stream's window from the protocol's default (65535), which the
 * acknowledgement then lowers by the difference.  A head decided before
 * the acknowledgement (a client that sends its request in its first
 * flight, as curl does) must open the window by what the client lacks,
 * not by what nghttp2 believes for now: else no WINDOW_UPDATE goes out,
 * the acknowledgement closes the window and the upload stalls.
 */
static void
open_stream_window(H2State *st, NetRequest *req)
{
	int32_t		unacked = st->settings_acked ? 0 :
		NGHTTP2_INITIAL_WINDOW_SIZE - st->preread;
	int32_t		left = nghttp2_session_get_stream_local_window_size(st->session,
																	req->stream_id);

	/* left: what the client may still send, in its terms */
	if (left - unacked + (int32_t) req->raw_len < H2_STREAM_WINDOW)
		nghttp2_session_set_local_window_size(st->session, NGHTTP2_FLAG_NONE,
											  req->stream_id,
											  H2_STREAM_WINDOW + unacked);
}

void
net_h2_read_body(NetRequest *req)
{
	H2State    *st = state_of(req->conn);

	req->state = NET_REQ_BODY;
	req->last_data_ms = net_now_ms();
	/* the body is wanted: open its window beyond the preread */
	open_stream_window(st, req);
	if (req->raw_len > 0)
	{
		net_body_append(req, req->raw, req->raw_len);
		req->unconsumed += req->raw_len;
		req->raw_len = 0;
	}
	if (req->body_gone || req->body_status != NET_BODY_OK)
		push_ready(st, req);
	net_conn_kick(req->conn);
}

void
net_h2_respond(NetRequest *req, int status, const char *const *headers,
			   const char *body, size_t len, bool stream)
{
	H2State    *st = state_of(req->conn);
	nghttp2_nv	nva[H2_MAX_RESPONSE_HEADERS + 2];
	char		status_text[8];
	char		length_text[24];
	int			n = 0;
	nghttp2_data_provider prd;
	bool		with_data = !req->head && (stream || len > 0);

	snprintf(status_text, sizeof(status_text), "%d", status);
	nva[n++] = (nghttp2_nv) {(uint8_t *) ":status", (uint8_t *) status_text, 7,
		strlen(status_text), NGHTTP2_NV_FLAG_NONE};
	for (int i = 0; headers && headers[i] && n < H2_MAX_RESPONSE_HEADERS; i += 2)
		nva[n++] = (nghttp2_nv) {(uint8_t *) headers[i], (uint8_t *) headers[i + 1],
			strlen(headers[i]), strlen(headers[i + 1]), NGHTTP2_NV_FLAG_NONE};
	if (!stream)
	{
		snprintf(length_text, sizeof(length_text), "%zu", len);
		nva[n++] = (nghttp2_nv) {(uint8_t *) "content-length", (uint8_t *) length_text, 14,
			strlen(length_text), NGHTTP2_NV_FLAG_NONE};
	}
	if (with_data && len > 0)
	{
		if (!net_buf_reserve(&req->out, &req->out_cap, 0, len))
		{
			nghttp2_submit_rst_stream(st->session, NGHTTP2_FLAG_NONE, req->stream_id,
									  NGHTTP2_INTERNAL_ERROR);
			net_conn_kick(req->conn);
			return;
		}
		memcpy(req->out, body, len);
		req->out_len = len;
		req->out_off = 0;
	}
	/*
	 * Answered before its body ended: the body is dropped and the stream
	 * reset once the answer is out (on_frame_send); no window opens for it.
	 */
	if (!req->body_gone)
	{
		req->body_refused = true;
	}
	req->state = NET_REQ_ANSWERED;
	req->streaming = stream;
	req->finished = !stream;
	prd.source.ptr = req;
	prd.read_callback = read_out;
	nghttp2_submit_response(st->session, req->stream_id, nva, n, with_data ? &prd : NULL);
	net_conn_kick(req->conn);
}

void
net_h2_stream_write(NetRequest *req, const char *data, size_t len)
{
	H2State    *st = state_of(req->conn);

	if (req->head)
		return;
	if (len > 0)
	{
		if (req->out_off > 0)
		{
			memmove(req->out, req->out + req->out_off, req->out_len - req->out_off);
			req->out_len -= req->out_off;
			req->out_off = 0;
		}
		if (!net_buf_reserve(&req->out, &req->out_cap, req->out_len, len))
		{
			net_h2_reset(req);
			return;
		}
		memcpy(req->out + req->out_len, data, len);
		req->out_len += len;
	}
	nghttp2_session_resume_data(st->session, req->stream_id);
	net_conn_kick(req->conn);
}

void
net_h2_reset(NetRequest *req)
{
	H2State    *st = state_of(req->conn);

	nghttp2_submit_rst_stream(st->session, NGHTTP2_FLAG_NONE, req->stream_id,
							  NGHTTP2_CANCEL);
	net_conn_kick(req->conn);
}

/*
 * Timeouts per stream, so that one stalled stream does not end the others:
 * a head not complete within header_timeout is reset (CANCEL: there is no
 * request to answer), a body that stalled for idle_timeout is answered 408
 * (then reset, as every answer before the end of its body).  Returns
 * whether a stream is still being read or was just cut: then the
 * connection is not idle.
 */
bool
net_h2_timeouts(NetConn *conn, int64_t now)
{
	H2State    *st = state_of(conn);
	const NetLimits *lim = conn->limits;
	bool		reading = false;

	for (NetRequest *req = st->streams; req && !conn->dead; req = req->next_stream)
	{
		if (req->state == NET_REQ_HEADERS)
		{
			if (now - req->started_ms <= lim->header_timeout_ms)
				reading = true;
			else
			{
				/* no longer HEADERS: reset once, closed when it goes out */
				nghttp2_submit_rst_stream(st->session, NGHTTP2_FLAG_NONE, req->stream_id,
										  NGHTTP2_CANCEL);
				req->state = NET_REQ_ANSWERED;
				req->finished = true;
				reading = true;	/* not idle: the reset is to go out */
				net_conn_kick(conn);
			}
		}
		else if (req->state == NET_REQ_BODY && !req->body_gone &&
				 req->body_status == NET_BODY_OK)
		{
			if (now - req->last_data_ms <= lim->idle_timeout_ms)
				reading = true;
			else
			{
				req->state = NET_REQ_HANDLER;
				conn->handler->on_error(req, 408, "request_timeout", "the request body stalled");
				if (req->state != NET_REQ_ANSWERED)
					net_h2_reset(req);
				reading = true;	/* not idle: the answer is to go out */
				net_conn_kick(conn);
			}
		}
	}
	return reading;
}

/* Draining: no new streams, the open ones finish. */
void
net_h2_goaway(NetConn *conn)
{
	H2State    *st = state_of(conn);

	nghttp2_submit_goaway(st->session, NGHTTP2_FLAG_NONE,
						  nghttp2_session_get_last_proc_stream_id(st->session),
						  NGHTTP2_NO_ERROR, NULL, 0);
	net_conn_kick(conn);
}
