/*-------------------------------------------------------------------------
 * net_reply.c
 *	  What an endpoint does with a request: look at its headers, ask for
 *	  its body, answer it whole or stream the answer.  The same calls work
 *	  on HTTP/1.1 and HTTP/2.
 *
 * Response header names are given in lower case (HTTP/2 requires it; on
 * HTTP/1.1 case does not matter), as a NULL-terminated array of name,
 * value pairs.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "net/net_int.h"

bool
net_request_is_h2(NetRequest *req)
{
	return req->stream_id != 0;
}

/*
 * The handler takes the body, at most limit bytes (after inflating, when
 * the request said Content-Encoding: gzip; the caller checked it).  Its
 * on_body runs once it is complete or broke.
 */
void
net_read_body(NetRequest *req, size_t limit)
{
	size_t		len;
	const char *enc = net_header(req, "content-encoding", &len);

	req->gzip = enc != NULL && len == 4 && pg_strncasecmp(enc, "gzip", 4) == 0;
	req->body_limit = limit;
	if (!net_body_begin(req))
		req->body_status = NET_BODY_TOO_LARGE;
	req->state = NET_REQ_BODY;
	if (req->stream_id != 0)
		net_h2_read_body(req);
	else
		net_h1_read_body(req);
}

void
net_respond(NetRequest *req, int status, const char *const *headers,
			const char *body, size_t len)
{
	if (req->state == NET_REQ_ANSWERED || req->conn->dead)
		return;
	if (req->stream_id != 0)
		net_h2_respond(req, status, headers, body, len, false);
	else
		net_h1_respond(req, status, headers, body, len, false);
}

/* Starts an answer of unknown length (chunked on HTTP/1.1). */
void
net_stream_start(NetRequest *req, int status, const char *const *headers)
{
	if (req->stream_id != 0)
		net_h2_respond(req, status, headers, NULL, 0, true);
	else
		net_h1_respond(req, status, headers, NULL, 0, true);
}

void
net_stream_write(NetRequest *req, const char *data, size_t len)
{
	if (req->conn->dead || len == 0)
		return;
	if (req->stream_id != 0)
		net_h2_stream_write(req, data, len);
	else
		net_h1_stream_write(req, data, len);
}

/* Bytes written to the stream that did not leave the process yet. */
size_t
net_stream_unsent(NetRequest *req)
{
	size_t		n = req->conn->out_len - req->conn->out_off;

	if (req->stream_id != 0)
		n += req->out_len - req->out_off;
	return n;
}

/*
 * Ends a streaming answer normally: the last chunk on HTTP/1.1, END_STREAM
 * on HTTP/2, after what was written.  The request's on_gone follows.
 */
void
net_stream_end(NetRequest *req)
{
	if (req->conn->dead || req->finished)
		return;
	req->finished = true;
	if (req->stream_id != 0)
		net_h2_stream_write(req, NULL, 0);
	else
		net_h1_stream_write(req, NULL, 0);
	net_conn_kick(req->conn);
}

/*
 * Ends a streaming answer abruptly: the HTTP/2 stream is reset, an
 * HTTP/1.1 connection is closed.  The request's on_gone follows.
 */
void
net_stream_cut(NetRequest *req)
{
	if (req->stream_id != 0)
		net_h2_reset(req);
	else
		net_conn_abort(req->conn);
}

bool
net_peer_address(NetRequest *req, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	socklen_t	len = sizeof(ss);

	out[0] = '\0';
	if (getpeername(req->conn->fd, (struct sockaddr *) &ss, &len) != 0)
		return false;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *) &ss)->sin_addr, out, outlen);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &ss)->sin6_addr, out, outlen);
	return out[0] != '\0';
}

/* The answer is queued (or streaming): nothing more may be sent. */
bool
net_request_answered(NetRequest *req)
{
	return req->state == NET_REQ_ANSWERED;
}
