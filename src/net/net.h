/*-------------------------------------------------------------------------
 * net.h
 *	  The HTTP engine shared by the ingest workers and the SSE relay:
 *	  listeners, connections, TLS (OpenSSL), HTTP/1.1 (http_parser, behind
 *	  h1_parser.c) and HTTP/2 (nghttp2), and the reply API of the endpoints.
 *
 * One process runs one server.  Words: a *connection* is one accepted
 * socket; a *request* is one HTTP/1.1 request or one HTTP/2 stream.  A
 * request is handed to the server's handler twice at most: once when its
 * headers are complete (on_headers), where the handler either answers at
 * once (every refusal: no body byte has been read) or asks for the body
 * with net_read_body(); then once the body is complete or broke
 * (on_body).  Library callbacks only record what happened (malloc'ed
 * memory, flags); the handlers run after the library returned, from the
 * loop, where PostgreSQL work (palloc, ereport) is safe.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_NET_H
#define MACHPAY_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct NetConn NetConn;
typedef struct NetRequest NetRequest;

/* Outcome of reading a body, seen by on_body. */
typedef enum NetBodyStatus
{
	NET_BODY_OK,
	NET_BODY_TOO_LARGE,			/* over the limit (after inflating) */
	NET_BODY_BAD_ENCODING,		/* corrupt gzip */
	NET_BODY_BROKEN				/* broken chunking, truncated stream */
} NetBodyStatus;

typedef struct NetHeader
{
	char	   *name;			/* lower case */
	char	   *value;
	size_t		value_len;
} NetHeader;

struct NetRequest
{
	NetConn    *conn;
	int32_t		stream_id;		/* HTTP/2 stream; 0 on HTTP/1.1 */
	char		method[16];
	char	   *path;			/* without the query; NUL-terminated */
	char	   *query;			/* after '?', or NULL */
	NetHeader  *headers;
	int			nheaders;
	int64_t		content_length; /* -1: none declared */
	bool		has_body;		/* a body follows the headers */
	bool		head;			/* HEAD: answer without a body */

	/* body, once net_read_body() was called */
	char	   *body;
	size_t		body_len;
	size_t		body_wire_len;	/* as sent, before inflating */
	NetBodyStatus body_status;

	/* endpoint's use: what it keeps across loop turns, and its hooks */
	void	   *user;
	void		(*on_gone) (NetRequest *req);	/* connection or stream died */
	void		(*on_drained) (NetRequest *req);	/* streamed output went out */

	/* engine's state below */
	int			state;
	bool		gzip;
	size_t		body_cap;
	size_t		body_limit;
	void	   *zs;				/* z_stream while inflating */
	char	   *raw;			/* HTTP/2 DATA held before the decision */
	size_t		raw_len;
	size_t		raw_cap;
	size_t		unconsumed;		/* HTTP/2 DATA bytes not yet given back */
	char	   *out;			/* response bytes not yet framed (HTTP/2) */
	size_t		out_len;
	size_t		out_off;
	size_t		out_cap;
	bool		streaming;		/* response of unknown length */
	bool		finished;		/* last response byte queued */
	bool		body_refused;	/* answered before the body: drop it (HTTP/2:
								 * and RST_STREAM once answered) */
	bool		body_gone;		/* HTTP/2: the stream's request side ended */
	int			headers_cap;
	int64_t		started_ms;		/* HTTP/2: when the stream's head began */
	int64_t		last_data_ms;	/* HTTP/2: last body byte, or the ask for it */
	NetRequest *next_ready;
	bool		in_ready;
	NetRequest *prev_stream;	/* HTTP/2: the connection's streams */
	NetRequest *next_stream;
};

/* What the server does with requests. */
typedef struct NetHandler
{
	void		(*on_headers) (NetRequest *req);
	void		(*on_body) (NetRequest *req);
	/*
	 * a protocol error or a timeout (408) to answer: HTTP/1.1 (the
	 * connection then closes) or one HTTP/2 stream
	 */
	void		(*on_error) (NetRequest *req, int status, const char *code,
							 const char *message);
} NetHandler;

/* Limits, refreshed from the settings on SIGHUP (net_apply_limits). */
typedef struct NetLimits
{
	int			max_connections;
	int			header_timeout_ms;	/* whole head must arrive within it (per
									 * HTTP/2 stream too) */
	int			idle_timeout_ms;	/* keep-alive, stalled reads/writes and
									 * stalled bodies */
	int			max_header_bytes;	/* request line + headers / header block */
	int			h2_max_streams;
	int			h2_max_resets;	/* streams reset by the client per connection */
	int			h2_max_control;	/* SETTINGS/PING/WINDOW_UPDATE/PRIORITY per connection */
	int			h2_preread;		/* stream window before the decision */
	size_t		max_output;		/* unsent bytes per connection */
} NetLimits;

/* net_loop.c: the server */
extern void net_server_init(const NetHandler *handler, const char *name,
							const char *tls_cert_file, const char *tls_key_file);
extern void net_limits_from_settings(NetLimits *limits);
extern void net_apply_limits(const NetLimits *limits);
extern int	net_open_listeners(const char *addresses, int port, bool log_failure);
extern void net_close_listeners(void);
extern int	net_listener_count(void);
extern bool net_tls_enabled(void);
extern int	net_connection_count(void);
extern int	net_wait(long timeout_ms);
extern void net_add_fd(int fd);
extern void net_remove_fd(int fd);
extern void net_run(void);
extern void net_begin_drain(void);
extern void net_count_closes(bool count);

/* Wake reasons returned by net_wait. */
#define NET_WAKE_LATCH		0x01
#define NET_WAKE_SOCKETS	0x02

/* net_reply.c: the endpoint's side of a request */
extern void net_read_body(NetRequest *req, size_t limit);
extern const char *net_header(NetRequest *req, const char *lname, size_t *len);
extern void net_respond(NetRequest *req, int status, const char *const *headers,
						const char *body, size_t len);
extern void net_stream_start(NetRequest *req, int status, const char *const *headers);
extern void net_stream_write(NetRequest *req, const char *data, size_t len);
extern size_t net_stream_unsent(NetRequest *req);
extern void net_stream_end(NetRequest *req);
extern void net_stream_cut(NetRequest *req);
extern bool net_request_is_h2(NetRequest *req);
extern bool net_request_answered(NetRequest *req);
extern bool net_peer_address(NetRequest *req, char *out, size_t outlen);

#endif							/* MACHPAY_NET_H */
