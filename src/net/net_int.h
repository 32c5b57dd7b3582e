/*-------------------------------------------------------------------------
 * net_int.h
 *	  Inside the HTTP engine: the connection, and the entry points of its
 *	  layers.  Calls go one way: net_loop.c -> net_h1.c / net_h2.c (which
 *	  run the server's handlers, through NetHandler) and net_reply.c (the
 *	  handlers' side) -> net_h1.c / net_h2.c -> net_body.c, net_conn.c.
 *
 * Memory here is malloc'ed, never palloc'ed: it is filled from inside
 * library callbacks (http_parser, nghttp2), where a PostgreSQL error must
 * not unwind.  A failed allocation closes the connection.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_NET_INT_H
#define MACHPAY_NET_INT_H

#include <openssl/ssl.h>

#include "net/net.h"

typedef enum NetProto
{
	NET_PROTO_UNKNOWN,			/* nothing read yet: h2 preface or HTTP/1.1 */
	NET_PROTO_H1,
	NET_PROTO_H2
} NetProto;

/*
 * Why the server closed a connection (counted per cause in /metrics): the
 * first reason given wins.
 */
typedef enum NetCloseCause
{
	NET_CLOSE_UNSET,
	NET_CLOSE_PEER,				/* the client closed or reset it */
	NET_CLOSE_CLIENT_ASKED,		/* Connection: close, HTTP/1.0 */
	NET_CLOSE_IDLE,				/* no request for idle_timeout */
	NET_CLOSE_HEADER_TIMEOUT,	/* head not in within header_timeout */
	NET_CLOSE_BODY_TIMEOUT,		/* body upload stalled */
	NET_CLOSE_WRITE_STALL,		/* the client read nothing for idle_timeout */
	NET_CLOSE_REFUSED_BODY,		/* answered before a body it will not read */
	NET_CLOSE_PROTOCOL_ERROR,	/* malformed request or frames */
	NET_CLOSE_ABUSE,			/* an HTTP/2 abuse limit */
	NET_CLOSE_TLS,				/* TLS handshake failed */
	NET_CLOSE_ERROR,			/* out of memory, library failure */
	NET_CLOSE_SHUTDOWN,			/* the worker drains */
	NET_CLOSE_CONNECTION_LIMIT, /* http_max_connections reached */
	NET_CLOSE_CAUSES
} NetCloseCause;

/* Request states */
#define NET_REQ_HEADERS		0	/* head being read */
#define NET_REQ_DECIDING	1	/* head complete, handler not run yet */
#define NET_REQ_BODY		2	/* reading the body the handler asked for */
#define NET_REQ_HANDLER		3	/* with the handler (body done or none) */
#define NET_REQ_ANSWERED	4	/* response fully queued or streaming */

struct NetConn
{
	int			fd;
	SSL		   *ssl;
	bool		handshake_done;
	NetProto	proto;
	const NetHandler *handler;
	const NetLimits *limits;

	char	   *in;				/* bytes read; parsed up to in_off */
	size_t		in_len;
	size_t		in_off;
	size_t		in_cap;
	char	   *out;			/* bytes to write */
	size_t		out_len;
	size_t		out_off;
	size_t		out_cap;

	bool		closing;		/* close once out is written */
	bool		dead;			/* closed: freed at the end of the turn */
	bool		peer_eof;
	bool		lingering;		/* sending side shut, reading to drop */
	NetCloseCause close_cause;
	size_t		linger_bytes;
	uint32_t	watched;		/* epoll events registered */
	bool		kicked;			/* on the kick list */
	bool		busy;			/* a request is with a handler or streaming */
	int64_t		last_read_ms;
	int64_t		last_write_ms;
	int64_t		head_started_ms;	/* 0: not inside a request head */

	void	   *proto_state;
	NetConn    *prev;
	NetConn    *next;
	NetConn    *next_kick;
};

/* net_conn.c: bytes on the socket, with or without TLS */
extern int64_t net_now_ms(void);
extern bool net_is_draining(void);
extern bool net_buf_reserve(char **buf, size_t *cap, size_t used, size_t more);
extern bool net_conn_write(NetConn *conn, const void *data, size_t len);
extern int	net_conn_flush(NetConn *conn);
extern ssize_t net_conn_read(NetConn *conn, char *buf, size_t cap);
extern ssize_t net_conn_discard(NetConn *conn, size_t len);
extern int	net_conn_handshake(NetConn *conn);
extern void net_conn_kick(NetConn *conn);
extern NetConn *net_conn_take_kicked(void);
extern void net_conn_abort(NetConn *conn);
extern void net_conn_close_cause(NetConn *conn, NetCloseCause cause);
extern void net_conn_abort_for(NetConn *conn, NetCloseCause cause);
extern void net_count_close(NetCloseCause cause);

/* net_tls.c */
extern SSL_CTX *net_tls_make_ctx(const char *cert_file, const char *key_file);
extern bool net_tls_alpn_h2(NetConn *conn);

/* net_h1.c: HTTP/1.1 connections */
extern bool net_h1_start(NetConn *conn);
extern void net_h1_process(NetConn *conn);
extern void net_h1_free(NetConn *conn);
extern void net_h1_respond(NetRequest *req, int status, const char *const *headers,
						   const char *body, size_t len, bool stream);
extern void net_h1_stream_write(NetRequest *req, const char *data, size_t len);
extern void net_h1_read_body(NetRequest *req);
extern void net_h1_timeout(NetConn *conn, bool header_timer);
extern size_t net_h1_drop_left(NetConn *conn);
extern void net_h1_dropped(NetConn *conn, size_t n);
extern bool net_h1_between_requests(NetConn *conn);
extern bool net_h1_idle(NetConn *conn);

/* net_h2.c: HTTP/2 connections */
extern bool net_h2_start(NetConn *conn);
extern void net_h2_process(NetConn *conn);
extern void net_h2_free(NetConn *conn);
extern void net_h2_respond(NetRequest *req, int status, const char *const *headers,
						   const char *body, size_t len, bool stream);
extern void net_h2_stream_write(NetRequest *req, const char *data, size_t len);
extern void net_h2_read_body(NetRequest *req);
extern void net_h2_reset(NetRequest *req);
extern void net_h2_goaway(NetConn *conn);
extern bool net_h2_timeouts(NetConn *conn, int64_t now);

/* net_body.c: parts of a request, body bytes inflating gzip as they come */
extern bool net_body_begin(NetRequest *req);
extern void net_body_append(NetRequest *req, const char *data, size_t len);
extern void net_body_finish(NetRequest *req);
extern bool net_req_add_header(NetRequest *req, const char *name, size_t nlen,
							   const char *value, size_t vlen);
extern bool net_req_set_path(NetRequest *req, const char *target, size_t len);
extern void net_req_free(NetRequest *req);

extern const char *net_status_reason(int status);

#endif							/* MACHPAY_NET_INT_H */
