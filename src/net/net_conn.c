/*-------------------------------------------------------------------------
 * net_conn.c
 *	  Bytes in and out of one connection, over TLS or not, and the list of
 *	  connections that have something to do before the next wait.
 *
 * Output is queued in the connection and written as far as the socket
 * takes it; the loop watches for writability only while some is left.
 * TLS runs on the non-blocking socket (SSL_read/SSL_write): a
 * WANT_READ/WANT_WRITE just means "try again on the next event".
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>
#include <time.h>

#include <openssl/err.h>

#include "net/net_int.h"

static NetConn *kick_head = NULL;

int64_t
net_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Grows *buf so that more bytes fit after used; false if out of memory. */
bool
net_buf_reserve(char **buf, size_t *cap, size_t used, size_t more)
{
	size_t		want = used + more;
	size_t		ncap;
	char	   *n;

	if (want <= *cap)
		return true;
	ncap = *cap ? *cap : 4096;
	while (ncap < want)
		ncap *= 2;
	n = realloc(*buf, ncap);
	if (n == NULL)
		return false;
	*buf = n;
	*cap = ncap;
	return true;
}

bool
net_conn_write(NetConn *conn, const void *data, size_t len)
{
	if (conn->dead || len == 0)
		return !conn->dead;
	if (conn->out_off > 0 && conn->out_off == conn->out_len)
		conn->out_off = conn->out_len = 0;
	if (!net_buf_reserve(&conn->out, &conn->out_cap, conn->out_len, len))
	{
		net_conn_abort_for(conn, NET_CLOSE_ERROR);
		return false;
	}
	memcpy(conn->out + conn->out_len, data, len);
	conn->out_len += len;
	net_conn_kick(conn);
	return true;
}

/* Writes what the socket takes.  Returns -1 when the connection failed. */
int
net_conn_flush(NetConn *conn)
{
	while (conn->out_off < conn->out_len)
	{
		size_t		n = conn->out_len - conn->out_off;
		ssize_t		w;

		if (conn->ssl)
		{
			int			r;

			ERR_clear_error();
			r = SSL_write(conn->ssl, conn->out + conn->out_off, (int) Min(n, (size_t) INT_MAX));
			if (r <= 0)
			{
				int			e = SSL_get_error(conn->ssl, r);

				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
					break;
				return -1;
			}
			w = r;
		}
		else
		{
			w = send(conn->fd, conn->out + conn->out_off, n, MSG_NOSIGNAL);
			if (w < 0)
			{
				if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
					break;
				return -1;
			}
		}
		conn->out_off += w;
		conn->last_write_ms = net_now_ms();
	}
	if (conn->out_off == conn->out_len)
		conn->out_off = conn->out_len = 0;
	return 0;
}

/*
 * Reads into buf.  Returns the byte count, 0 at end of stream, -1 on an
 * error, -2 when nothing is there now.
 */
ssize_t
net_conn_read(NetConn *conn, char *buf, size_t cap)
{
	ssize_t		r;

	if (conn->ssl)
	{
		int			n;

		ERR_clear_error();
		n = SSL_read(conn->ssl, buf, (int) Min(cap, (size_t) INT_MAX));
		if (n > 0)
			return n;
		switch (SSL_get_error(conn->ssl, n))
		{
			case SSL_ERROR_WANT_READ:
			case SSL_ERROR_WANT_WRITE:
				return -2;
			case SSL_ERROR_ZERO_RETURN:
				return 0;
			default:
				return -1;
		}
	}
	r = recv(conn->fd, buf, cap, 0);
	if (r < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -2 : -1;
	return r;
}

/*
 * Reads and drops up to len bytes, like net_conn_read.  A plain TCP socket
 * drops them in the kernel without copying (MSG_TRUNC).
 */
ssize_t
net_conn_discard(NetConn *conn, size_t len)
{
	static char scratch[16384];
	ssize_t		r;

	if (conn->ssl)
		return net_conn_read(conn, scratch, Min(len, sizeof(scratch)));
	r = recv(conn->fd, NULL, Min(len, (size_t) INT_MAX), MSG_TRUNC | MSG_DONTWAIT);
	if (r < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -2 : -1;
	return r;
}

/* Advances the TLS handshake: 1 done, 0 in progress, -1 failed. */
int
net_conn_handshake(NetConn *conn)
{
	int			r;

	ERR_clear_error();
	r = SSL_accept(conn->ssl);
	if (r == 1)
	{
		conn->handshake_done = true;
		return 1;
	}
	switch (SSL_get_error(conn->ssl, r))
	{
		case SSL_ERROR_WANT_READ:
		case SSL_ERROR_WANT_WRITE:
			return 0;
		default:
			return -1;
	}
}

void
net_conn_kick(NetConn *conn)
{
	if (conn->kicked || conn->dead)
		return;
	conn->kicked = true;
	conn->next_kick = kick_head;
	kick_head = conn;
}

NetConn *
net_conn_take_kicked(void)
{
	NetConn    *c = kick_head;

	if (c != NULL)
	{
		kick_head = c->next_kick;
		c->kicked = false;
		c->next_kick = NULL;
	}
	return c;
}

void
net_conn_close_cause(NetConn *conn, NetCloseCause cause)
{
	if (conn->close_cause == NET_CLOSE_UNSET)
		conn->close_cause = cause;
}

void
net_conn_abort_for(NetConn *conn, NetCloseCause cause)
{
	net_conn_close_cause(conn, cause);
	net_conn_abort(conn);
}

/* Closes at the end of the turn without writing what is queued. */
void
net_conn_abort(NetConn *conn)
{
	net_conn_kick(conn);
	conn->dead = true;
}
