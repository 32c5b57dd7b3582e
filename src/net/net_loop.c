/*-------------------------------------------------------------------------
 * net_loop.c
 *	  The server of one process: listening sockets, accepted connections,
 *	  and the wait for work.
 *
 * Sockets are watched by an epoll set of ours; its descriptor sits in a
 * PostgreSQL WaitEventSet beside the process latch and postmaster death,
 * so one wait wakes on any of them (net_wait), and net_run then handles
 * every socket that is ready without waiting.  Each turn ends by moving
 * kicked connections on (answers given from outside a read, output to
 * flush) and closing the dead ones.
 *
 * Timeouts, checked a few times a second: a request head must arrive
 * within header_timeout (slowloris), a connection with no request in
 * progress is closed after idle_timeout (unless a request just reached its
 * socket), as is one whose writes stalled that long (a zero-window
 * reader); a body upload that stalls that long is answered 408.  Every
 * close is counted by its cause (NetCloseCause) in /metrics.
 * A connection closed after an answer first shuts down its sending side
 * and reads what the client still sends for a moment (lingering close),
 * so that the answer is not destroyed by a reset.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "common/machpay.h"
#include "common/stats.h"
#include "net/net_int.h"

#define NET_MAX_LISTENERS	16
#define NET_LISTEN_BACKLOG	4096
#define NET_ACCEPT_BATCH	32
#define NET_READ_CHUNK		(64 * 1024)
#define NET_HEAD_READ		4096	/* first read of a request */
#define NET_MAX_EVENTS		128
#define NET_TIMER_MS		200
#define NET_LINGER_MS		2000
#define NET_LINGER_MAX_BYTES	(1024 * 1024)
/* Bytes read from one connection per turn, so one cannot starve the rest. */
#define NET_READ_BUDGET		(256 * 1024)
/* Unsent bytes a connection may hold before we stop producing more. */
#define NET_MAX_OUTPUT		(256 * 1024)

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static const NetHandler *server_handler;
static NetLimits limits;
static SSL_CTX *ssl_ctx = NULL;
static const char *server_name = "server";
static int	epfd = -1;
static WaitEventSet *wait_set = NULL;
static int	listeners[NET_MAX_LISTENERS];
static int	nlisteners = 0;
static NetConn *conns = NULL;
static int	nconns = 0;
static bool draining = false;
static int64_t last_timer_ms = 0;
static int	other_fd = -1;		/* one more descriptor the owner watches */
static int	fd_limit = 1024;
static bool counting_closes = false;

/* Idle connections hold file descriptors: allow as many as the hard limit. */
static int
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
		(void) getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur > INT_MAX ? INT_MAX : (int) rl.rlim_cur;
}

/* The limits as the machpay.* settings say now. */
void
net_limits_from_settings(NetLimits *l)
{
	memset(l, 0, sizeof(*l));
	l->max_connections = machpay_http_max_connections;
	l->header_timeout_ms = machpay_http_header_timeout_ms;
	l->idle_timeout_ms = machpay_http_idle_timeout_ms;
	l->max_header_bytes = machpay_http_max_header_size;
	l->h2_max_streams = machpay_http2_max_streams;
	l->h2_max_resets = machpay_http2_max_resets;
	l->h2_max_control = machpay_http2_max_control_frames;
	l->h2_preread = machpay_http2_body_preread;
	l->max_output = NET_MAX_OUTPUT;
}

/* TLS when both files are set. */
void
net_server_init(const NetHandler *handler, const char *name,
				const char *tls_cert_file, const char *tls_key_file)
{
	NetLimits	l;

	server_handler = handler;
	server_name = name;
	fd_limit = raise_fd_limit();
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		ereport(ERROR, (errcode_for_socket_access(),
						errmsg("%s could not create an epoll set: %m", name)));
	/* 17 takes an owner (none: the set lives as long as the worker) */
#if PG_VERSION_NUM >= 170000
	wait_set = CreateWaitEventSet(NULL, 3);
#else
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
#endif
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, epfd, NULL, NULL);
	net_limits_from_settings(&l);
	net_apply_limits(&l);
	if (tls_cert_file && tls_cert_file[0] && tls_key_file && tls_key_file[0])
		ssl_ctx = net_tls_make_ctx(tls_cert_file, tls_key_file);
}

void
net_apply_limits(const NetLimits *l)
{
	limits = *l;
	limits.max_connections = Min(limits.max_connections, fd_limit - 64);
}

bool
net_tls_enabled(void)
{
	return ssl_ctx != NULL;
}

int
net_connection_count(void)
{
	return nconns;
}

int
net_listener_count(void)
{
	return nlisteners;
}

static void
watch(int fd, uint32_t events, void *ptr, int op)
{
	struct epoll_event ev;

	ev.events = events;
	ev.data.ptr = ptr;
	(void) epoll_ctl(epfd, op, fd, &ev);
}

/* Another descriptor (the relay's database connection) in the same wait. */
void
net_add_fd(int fd)
{
	other_fd = fd;
	watch(fd, EPOLLIN, NULL, EPOLL_CTL_ADD);
}

void
net_remove_fd(int fd)
{
	(void) epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
	if (other_fd == fd)
		other_fd = -1;
}

/* ---- listeners ---- */

static int
open_listener(struct addrinfo *ai)
{
	int			fd;
	int			on = 1;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
		(ai->ai_family == AF_INET6 &&
		 setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) != 0) ||
		bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
		listen(fd, NET_LISTEN_BACKLOG) != 0)
	{
		int			save = errno;

		close(fd);
		errno = save;
		return -1;
	}
	return fd;
}

/* Listens on every address of the list ("*": all); returns how many. */
int
net_open_listeners(const char *addresses, int port, bool log_failure)
{
	char	   *raw = pstrdup(addresses);
	List	   *hosts;
	ListCell   *lc;
	char		portstr[16];

	snprintf(portstr, sizeof(portstr), "%d", port);
	if (!SplitGUCList(raw, ',', &hosts))
	{
		ereport(LOG, (errmsg("%s: invalid list syntax in machpay.listen_addresses", server_name)));
		return 0;
	}
	foreach(lc, hosts)
	{
		const char *host = lfirst(lc);
		struct addrinfo hints;
		struct addrinfo *res;
		int			rc;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		if (strcmp(host, "*") == 0)
			host = NULL;
		rc = getaddrinfo(host, portstr, &hints, &res);
		if (rc != 0)
		{
			if (log_failure)
				ereport(WARNING,
						(errmsg("%s could not resolve machpay.listen_addresses entry \"%s\": %s",
								server_name, host ? host : "*", gai_strerror(rc))));
			continue;
		}
		for (struct addrinfo *ai = res; ai != NULL && nlisteners < NET_MAX_LISTENERS; ai = ai->ai_next)
		{
			int			fd = open_listener(ai);

			if (fd < 0)
			{
				if (log_failure)
					ereport(WARNING,
							(errcode_for_socket_access(),
							 errmsg("%s could not listen on \"%s\" port %d: %m",
									server_name, host ? host : "*", port)));
				continue;
			}
			listeners[nlisteners++] = fd;
			/* listeners are told apart from connections by a NULL-free tag */
			watch(fd, EPOLLIN, &listeners[nlisteners - 1], EPOLL_CTL_ADD);
		}
		freeaddrinfo(res);
	}
	return nlisteners;
}

void
net_close_listeners(void)
{
	for (int i = 0; i < nlisteners; i++)
	{
		(void) epoll_ctl(epfd, EPOLL_CTL_DEL, listeners[i], NULL);
		close(listeners[i]);
	}
	nlisteners = 0;
}

static bool
is_listener(void *ptr)
{
	return ptr >= (void *) &listeners[0] && ptr < (void *) &listeners[NET_MAX_LISTENERS];
}

/* ---- connections ---- */

/* Reads only while there is room and a reason; writes while output waits. */
static void
update_watch(NetConn *conn)
{
	uint32_t	ev = 0;

	if (conn->lingering || (!conn->closing && conn->in_len - conn->in_off < NET_READ_CHUNK))
		ev |= EPOLLIN | EPOLLRDHUP;
	if (conn->out_len > conn->out_off ||
		(conn->ssl && !conn->handshake_done && SSL_want_write(conn->ssl)))
		ev |= EPOLLOUT;
	if (ev != conn->watched)
	{
		conn->watched = ev;
		watch(conn->fd, ev, conn, EPOLL_CTL_MOD);
	}
}

/* The ingest workers count closes by cause; the relay does not. */
void
net_count_closes(bool count)
{
	counting_closes = count;
}

void
net_count_close(NetCloseCause cause)
{
	static const StatCounter counters[NET_CLOSE_CAUSES] = {
		[NET_CLOSE_UNSET] = STAT_HTTP_CLOSES_OTHER,
		[NET_CLOSE_PEER] = STAT_HTTP_CLOSES_PEER,
		[NET_CLOSE_CLIENT_ASKED] = STAT_HTTP_CLOSES_CLIENT_ASKED,
		[NET_CLOSE_IDLE] = STAT_HTTP_CLOSES_IDLE,
		[NET_CLOSE_HEADER_TIMEOUT] = STAT_HTTP_CLOSES_HEADER_TIMEOUT,
		[NET_CLOSE_BODY_TIMEOUT] = STAT_HTTP_CLOSES_BODY_TIMEOUT,
		[NET_CLOSE_WRITE_STALL] = STAT_HTTP_CLOSES_WRITE_STALL,
		[NET_CLOSE_REFUSED_BODY] = STAT_HTTP_CLOSES_REFUSED_BODY,
		[NET_CLOSE_PROTOCOL_ERROR] = STAT_HTTP_CLOSES_PROTOCOL_ERROR,
		[NET_CLOSE_ABUSE] = STAT_HTTP_CLOSES_ABUSE,
		[NET_CLOSE_TLS] = STAT_HTTP_CLOSES_TLS,
		[NET_CLOSE_ERROR] = STAT_HTTP_CLOSES_ERROR,
		[NET_CLOSE_SHUTDOWN] = STAT_HTTP_CLOSES_SHUTDOWN,
		[NET_CLOSE_CONNECTION_LIMIT] = STAT_HTTP_CLOSES_CONNECTION_LIMIT,
	};

	if (counting_closes && cause >= 0 && cause < NET_CLOSE_CAUSES)
		stats_add(counters[cause], 1);
}

static void
conn_free(NetConn *conn)
{
	net_count_close(conn->close_cause);
	if (conn->proto == NET_PROTO_H1)
		net_h1_free(conn);
	else if (conn->proto == NET_PROTO_H2)
		net_h2_free(conn);
	(void) epoll_ctl(epfd, EPOLL_CTL_DEL, conn->fd, NULL);
	if (conn->ssl)
		SSL_free(conn->ssl);
	close(conn->fd);
	if (conn->prev)
		conn->prev->next = conn->next;
	else
		conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	free(conn->in);
	free(conn->out);
	free(conn);
	nconns--;
}

static void
accept_batch(int lfd)
{
	for (int i = 0; i < NET_ACCEPT_BATCH; i++)
	{
		int			fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int			one = 1;
		NetConn    *conn;

		if (fd < 0)
			return;
		if (draining || nconns >= limits.max_connections)
		{
			net_count_close(draining ? NET_CLOSE_SHUTDOWN : NET_CLOSE_CONNECTION_LIMIT);
			close(fd);
			continue;
		}
		conn = calloc(1, sizeof(NetConn));
		if (conn == NULL)
		{
			close(fd);
			continue;
		}
		(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		conn->fd = fd;
		conn->handler = server_handler;
		conn->limits = &limits;
		conn->last_read_ms = conn->last_write_ms = conn->head_started_ms = net_now_ms();
		if (ssl_ctx)
		{
			conn->ssl = SSL_new(ssl_ctx);
			if (conn->ssl == NULL || SSL_set_fd(conn->ssl, fd) != 1)
			{
				if (conn->ssl)
					SSL_free(conn->ssl);
				free(conn);
				close(fd);
				continue;
			}
		}
		else
			conn->handshake_done = true;
		conn->next = conns;
		if (conns)
			conns->prev = conn;
		conns = conn;
		nconns++;
		conn->watched = EPOLLIN | EPOLLRDHUP;
		watch(fd, conn->watched, conn, EPOLL_CTL_ADD);
	}
}

/* Plain connections: the HTTP/2 preface picks HTTP/2, anything else HTTP/1.1. */
static bool
pick_protocol(NetConn *conn)
{
	size_t		n = Min(conn->in_len, sizeof(h2_preface) - 1);

	if (conn->ssl)
		return net_tls_alpn_h2(conn) ? net_h2_start(conn) : net_h1_start(conn);
	if (memcmp(conn->in, h2_preface, n) == 0)
	{
		if (n < sizeof(h2_preface) - 1)
			return true;		/* wait for the rest of the preface */
		return net_h2_start(conn);
	}
	return net_h1_start(conn);
}

static void
proto_process(NetConn *conn)
{
	if (conn->proto == NET_PROTO_H1)
		net_h1_process(conn);
	else if (conn->proto == NET_PROTO_H2)
		net_h2_process(conn);
}

/*
 * Lingering close: the sending side is shut; read and drop until EOF, a
 * bounded amount per turn and in all (a client that goes on sending is
 * cut).
 */
static void
linger_read(NetConn *conn)
{
	char		buf[16384];

	for (int i = 0; i < 4; i++)
	{
		ssize_t		r = recv(conn->fd, buf, sizeof(buf), 0);

		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
		{
			net_conn_abort_for(conn, NET_CLOSE_PEER);
			return;
		}
		if (r < 0)
			return;
		conn->linger_bytes += r;
		if (conn->linger_bytes > NET_LINGER_MAX_BYTES)
		{
			net_conn_abort_for(conn, NET_CLOSE_REFUSED_BODY);
			return;
		}
	}
}

static void
conn_read(NetConn *conn)
{
	ssize_t		budget = NET_READ_BUDGET;
	bool		short_read = false;

	if (conn->lingering)
	{
		linger_read(conn);
		return;
	}
	if (conn->closing || conn->peer_eof)
		return;
	if (!conn->handshake_done)
	{
		int			r = net_conn_handshake(conn);

		if (r < 0)
			net_conn_abort_for(conn, NET_CLOSE_TLS);
		if (r <= 0)
			return;
	}
	/* parsed bytes leave the buffer once per read, not once per request */
	if (conn->in_off > 0)
	{
		memmove(conn->in, conn->in + conn->in_off, conn->in_len - conn->in_off);
		conn->in_len -= conn->in_off;
		conn->in_off = 0;
	}
	/* An HTTP/1.1 connection waiting for its answer reads no further. */
	while (conn->in_len < NET_READ_CHUNK && budget > 0)
	{
		ssize_t		r;
		size_t		want = 0;
		size_t		drop = 0;

		/* a refused HTTP/1.1 body: dropped without being read in */
		if (conn->proto == NET_PROTO_H1 && conn->in_len == conn->in_off)
			drop = net_h1_drop_left(conn);
		if (drop > 0)
		{
			r = net_conn_discard(conn, drop);
			if (r > 0)
			{
				net_h1_dropped(conn, r);
				budget -= r;
				conn->last_read_ms = net_now_ms();
				if ((size_t) r < drop)
					break;		/* the socket is drained */
				continue;
			}
		}
		else
		{
			if (!net_buf_reserve(&conn->in, &conn->in_cap, conn->in_len, NET_READ_CHUNK))
			{
				net_conn_abort_for(conn, NET_CLOSE_ERROR);
				return;
			}
			want = conn->in_cap - conn->in_len;
			/*
			 * The start of a request: its head first, in a small read, so
			 * that a body refused at the head is mostly dropped unread.
			 */
			if (conn->in_len == conn->in_off && (conn->proto == NET_PROTO_UNKNOWN ||
												 (conn->proto == NET_PROTO_H1 &&
												  net_h1_between_requests(conn))))
				want = Min(want, NET_HEAD_READ);
			r = net_conn_read(conn, conn->in + conn->in_len, want);
		}
		if (r == -2)
			break;
		if (r <= 0)
		{
			conn->peer_eof = true;
			net_conn_close_cause(conn, NET_CLOSE_PEER);
			/* nothing more to read: close unless an HTTP/1.1 answer is owed */
			if (r < 0 || !conn->busy || conn->proto != NET_PROTO_H1)
				net_conn_abort(conn);
			else
				conn->closing = true;
			break;
		}
		conn->in_len += r;
		budget -= r;
		conn->last_read_ms = net_now_ms();
		/* a short plain read drained the socket: no need to ask again */
		if (conn->ssl == NULL && (size_t) r < want)
			short_read = true;
		if (conn->proto == NET_PROTO_UNKNOWN && !pick_protocol(conn))
		{
			net_conn_abort_for(conn, NET_CLOSE_ERROR);
			return;
		}
		if (conn->proto == NET_PROTO_H2)
			conn->head_started_ms = 0;
		if (conn->proto != NET_PROTO_UNKNOWN)
			proto_process(conn);
		if (conn->dead || conn->closing || short_read)
			break;
	}
}

static bool request_arriving(NetConn *conn);

/*
 * Draining: a connection with no request in progress and none arriving
 * is owed nothing, and a request sent on it later could only be refused,
 * so it is closed at once (as nginx closes idle keep-alive connections
 * when it stops gracefully).  Requests in flight finish; their answers
 * close the connection (HTTP/1.1 Connection: close; HTTP/2 ends after its
 * GOAWAY once its streams are done).
 */
static bool
idle_at_drain(NetConn *conn)
{
	if (conn->closing || conn->lingering || conn->busy || conn->peer_eof ||
		conn->out_len > conn->out_off || conn->in_len > conn->in_off)
		return false;
	if (conn->proto == NET_PROTO_H2 ||
		(conn->proto == NET_PROTO_H1 && !net_h1_idle(conn)))
		return false;
	if (conn->ssl && conn->handshake_done && SSL_pending(conn->ssl) > 0)
		return false;
	return !request_arriving(conn);
}

static void
close_idle_at_drain(NetConn *conn)
{
	net_conn_close_cause(conn, NET_CLOSE_SHUTDOWN);
	if (conn->ssl && conn->handshake_done)
		(void) SSL_shutdown(conn->ssl); /* close_notify, best effort */
	net_conn_abort(conn);
}

static void
conn_finish_turn(NetConn *conn)
{
	for (int pass = 0; pass < 2 && !conn->dead; pass++)
	{
		size_t		before = conn->out_len - conn->out_off;

		proto_process(conn);
		if (net_conn_flush(conn) < 0)
			net_conn_abort_for(conn, NET_CLOSE_PEER);	/* reset by the client */
		/* drained: a streaming answer or a waiting pipeline may go on */
		else if (!(conn->out_len == 0 && before > 0))
			break;
	}
	/* TLS may hold decrypted bytes that no socket event will announce */
	if (!conn->dead && conn->ssl && conn->handshake_done && !conn->closing &&
		SSL_pending(conn->ssl) > 0 && conn->in_len - conn->in_off < NET_READ_CHUNK)
	{
		conn_read(conn);
		net_conn_kick(conn);
		return;
	}
	if (draining && !conn->dead && idle_at_drain(conn))
		close_idle_at_drain(conn);
	if (!conn->dead && conn->closing && !conn->lingering &&
		conn->out_len == conn->out_off)
	{
		if (conn->peer_eof)
			net_conn_abort_for(conn, NET_CLOSE_PEER);
		else
		{
			/* answer written: stop sending, drop what still comes */
			if (conn->ssl && conn->handshake_done)
				(void) SSL_shutdown(conn->ssl);
			(void) net_conn_flush(conn);
			(void) shutdown(conn->fd, SHUT_WR);
			conn->lingering = true;
			conn->last_read_ms = net_now_ms();
			linger_read(conn);
		}
	}
	/* a connection put back on the kick list is freed when taken again */
	if (conn->dead && !conn->kicked)
		conn_free(conn);
	else if (!conn->dead)
		update_watch(conn);
}

/*
 * Bytes that reached the socket since the last read: a connection is not
 * closed under a request that just came (the client would lose it to a
 * reset); the next turn reads it.
 */
static bool
request_arriving(NetConn *conn)
{
	char		b;

	return recv(conn->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static void
check_timeouts(int64_t now)
{
	NetConn    *next;

	for (NetConn *c = conns; c; c = next)
	{
		bool		expired = false;
		bool		answer = false;	/* HTTP/1.1: 408 if a request began */
		NetCloseCause cause = NET_CLOSE_IDLE;

		next = c->next;
		if (c->dead)
			continue;
		if (c->lingering)
			expired = now - c->last_read_ms > NET_LINGER_MS;
		else if (c->out_len > c->out_off)
		{
			expired = now - c->last_write_ms > limits.idle_timeout_ms;
			cause = NET_CLOSE_WRITE_STALL;
		}
		else if (c->head_started_ms != 0 && !c->busy)
		{
			expired = answer = now - c->head_started_ms > limits.header_timeout_ms &&
				!request_arriving(c);
			cause = NET_CLOSE_HEADER_TIMEOUT;
		}
		else if (c->proto == NET_PROTO_H2 && net_h2_timeouts(c, now))
			continue;			/* streams being read time out one by one */
		else if (!c->busy)
			expired = answer = now - Max(c->last_read_ms, c->last_write_ms) > limits.idle_timeout_ms &&
				!request_arriving(c);
		if (expired && answer && c->proto == NET_PROTO_H1)
			net_h1_timeout(c, cause == NET_CLOSE_HEADER_TIMEOUT);
		else if (expired)
			net_conn_abort_for(c, cause);
	}
}

/*
 * Waits for the latch, the sockets or the timeout; returns the wake
 * reasons.  Postmaster death ends the process.
 */
int
net_wait(long timeout_ms)
{
	WaitEvent	events[3];
	int			n;
	int			wake = 0;

	n = WaitEventSetWait(wait_set, timeout_ms, events, 3, PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			wake |= NET_WAKE_LATCH;
		}
		if (events[i].events & WL_SOCKET_READABLE)
			wake |= NET_WAKE_SOCKETS;
	}
	return wake;
}

/* Handles every ready socket, then the turn's leftovers; never waits. */
void
net_run(void)
{
	struct epoll_event evs[NET_MAX_EVENTS];
	int			n;
	NetConn    *conn;
	int64_t		now;

	n = epoll_wait(epfd, evs, NET_MAX_EVENTS, 0);
	for (int i = 0; i < n; i++)
	{
		void	   *ptr = evs[i].data.ptr;

		if (ptr == NULL)
			continue;			/* the owner's descriptor: it polls it itself */
		if (is_listener(ptr))
		{
			accept_batch(*(int *) ptr);
			continue;
		}
		conn = ptr;
		if (conn->dead)
			continue;
		if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			conn_read(conn);
		if ((evs[i].events & (EPOLLHUP | EPOLLERR)) && !conn->lingering &&
			(conn->closing || conn->peer_eof))
			net_conn_abort_for(conn, NET_CLOSE_PEER);
		net_conn_kick(conn);
	}
	while ((conn = net_conn_take_kicked()) != NULL)
		conn_finish_turn(conn);

	now = net_now_ms();
	if (now - last_timer_ms >= NET_TIMER_MS)
	{
		last_timer_ms = now;
		check_timeouts(now);
		while ((conn = net_conn_take_kicked()) != NULL)
			conn_finish_turn(conn);
	}
}

bool
net_is_draining(void)
{
	return draining;
}

/*
 * SIGTERM: no new connections; HTTP/2 clients are told to go away (GOAWAY
 * with the last stream taken), idle HTTP/1.1 connections are closed at
 * once, and every connection closes after the answers to the requests in
 * flight on it (idle_at_drain); a request whose head is decided from now
 * on gets the handler's answer for a server that stops.
 */
void
net_begin_drain(void)
{
	NetConn    *conn;

	draining = true;
	net_close_listeners();
	for (NetConn *c = conns; c; c = c->next)
	{
		if (c->proto == NET_PROTO_H2)
			net_h2_goaway(c);
		net_conn_kick(c);
	}
	while ((conn = net_conn_take_kicked()) != NULL)
		conn_finish_turn(conn);
}
