/*
 * flood_load.c
 *		Open-loop load generator over HTTP/1.1 or HTTP/2 (cleartext, prior
 *		knowledge): request k of the run is due at start + k / RATE,
 *		whatever happened to the requests before it.  A due request goes
 *		out at once if a connection (HTTP/1.1: an idle one; HTTP/2: one
 *		below its stream limit) can take it, else it waits in a queue in
 *		the client; its latency is measured from the time it was due, so
 *		a slow server cannot slow the offered rate down (no coordinated
 *		omission).  Every request posts the same body file.
 *
 *		One line per request in LOG, like h2load's --log-file: due time
 *		(us since epoch), HTTP status (0: connection lost or reset,
 *		-1: never sent before the end), microseconds from due to answer.
 *		At exit one summary line on stdout with the client's own CPU time.
 *
 * Build: cc -O2 -o flood_load bench/flood_load.c -lnghttp2
 * Usage: flood_load h1|h2 PORT TOKEN BODY_FILE RATE SECONDS CONNS LOG
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAXCONN		512
#define H2_STREAMS	128			/* most streams we keep open per connection */
#define DRAIN_US	5000000LL	/* answers still awaited after the end */

typedef struct Conn
{
	int			fd;
	/* HTTP/1.1: one request in flight */
	int			busy;
	long long	due_us;
	char		in[16384];
	size_t		inlen;
	char	   *out;			/* unsent part of the current request */
	size_t		outlen;
	/* HTTP/2 */
	nghttp2_session *h2;
	int			nstreams;
	struct Stream *streams;
} Conn;

typedef struct Stream
{
	long long	due_us;
	int			status;
	size_t		off;			/* body bytes handed to nghttp2 */
	int32_t		id;
	Conn	   *conn;
	struct Stream *prev,
			   *next;			/* the connection's open streams */
} Stream;

static int	h2mode;
static int	port;
static const char *token;
static char *body;
static size_t body_len;
static char *h1_request;
static size_t h1_request_len;
static FILE *logf;
static long long nsent, nanswered, nlost, reconnects;
static long long status_count[600];

static long long
now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (long long) tv.tv_sec * 1000000 + tv.tv_usec;
}

static void
log_answer(long long due, int status)
{
	fprintf(logf, "%lld\t%d\t%lld\n", due, status, now_us() - due);
	if (status > 0 && status < 600)
	{
		status_count[status]++;
		nanswered++;
	}
	else
		nlost++;
}

static int
connect_to(void)
{
	struct sockaddr_in sa;
	int			fd = socket(AF_INET, SOCK_STREAM, 0);
	int			one = 1;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0)
	{
		perror("connect");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

/* ---- HTTP/2 through nghttp2's session API ------------------------------ */

static ssize_t
h2_send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *user)
{
	Conn	   *c = user;
	ssize_t		n = write(c->fd, data, len);

	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? NGHTTP2_ERR_WOULDBLOCK :
			NGHTTP2_ERR_CALLBACK_FAILURE;
	return n;
}

static int
h2_header_cb(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
			 size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
	Stream	   *st;

	if (frame->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0)
		return 0;
	st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
	if (st != NULL)
		st->status = atoi((const char *) value);
	return 0;
}

static int
h2_data_chunk_cb(nghttp2_session *s, uint8_t flags, int32_t stream_id,
				 const uint8_t *data, size_t len, void *user)
{
	return 0;					/* answers are read and dropped */
}

static void
stream_unlink(Stream *st)
{
	if (st->prev)
		st->prev->next = st->next;
	else
		st->conn->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	st->conn->nstreams--;
	free(st);
}

static int
h2_close_cb(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *user)
{
	Stream	   *st = nghttp2_session_get_stream_user_data(s, stream_id);

	if (st == NULL)
		return 0;
	log_answer(st->due_us, st->status);
	stream_unlink(st);
	return 0;
}

static ssize_t
h2_body_cb(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
		   uint32_t *flags, nghttp2_data_source *source, void *user)
{
	Stream	   *st = source->ptr;
	size_t		n = body_len - st->off;

	if (n > length)
		n = length;
	memcpy(buf, body + st->off, n);
	st->off += n;
	if (st->off == body_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return n;
}

static void
h2_open(Conn *c)
{
	nghttp2_session_callbacks *cb;
	nghttp2_settings_entry set[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};

	c->fd = connect_to();
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_send_callback(cb, h2_send_cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, h2_header_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2_data_chunk_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_close_cb);
	nghttp2_session_client_new(&c->h2, cb, c);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, set, 1);
	c->nstreams = 0;
	c->streams = NULL;
}

/* Streams still open when a connection dies are answered with status 0. */
static void
h2_drop(Conn *c)
{
	while (c->streams)
	{
		log_answer(c->streams->due_us, 0);
		nghttp2_session_set_stream_user_data(c->h2, c->streams->id, NULL);
		stream_unlink(c->streams);
	}
	nghttp2_session_del(c->h2);
	c->h2 = NULL;
}

static void
h2_reopen(Conn *c)
{
	h2_drop(c);
	close(c->fd);
	reconnects++;
	h2_open(c);
}

static int
h2_can_take(Conn *c)
{
	uint32_t	limit = nghttp2_session_get_remote_settings(c->h2,
															NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

	if (limit > H2_STREAMS)
		limit = H2_STREAMS;
	return c->nstreams < (int) limit;
}

static void
h2_submit(Conn *c, long long due)
{
	char		len[32];
	char		auth[512];
	Stream	   *st = calloc(1, sizeof(Stream));
	nghttp2_data_provider dp;
#define NV(n, v) {(uint8_t *) (n), (uint8_t *) (v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
	nghttp2_nv	nv[] = {
		NV(":method", "POST"), NV(":scheme", "http"), NV(":authority", "127.0.0.1"),
		NV(":path", "/v1/ingest"), NV("content-type", "application/json"),
		NV("content-length", len), NV("authorization", auth)
	};

	snprintf(len, sizeof(len), "%zu", body_len);
	snprintf(auth, sizeof(auth), "Bearer %s", token);
	nv[5].valuelen = strlen(len);
	nv[6].valuelen = strlen(auth);
	st->due_us = due;
	st->conn = c;
	dp.source.ptr = st;
	dp.read_callback = h2_body_cb;
	if ((st->id = nghttp2_submit_request(c->h2, NULL, nv, 7, &dp, st)) < 0)
	{
		log_answer(due, 0);
		free(st);
		return;
	}
	st->next = c->streams;
	if (c->streams)
		c->streams->prev = st;
	c->streams = st;
	c->nstreams++;
	nsent++;
}

static void
h2_io(Conn *c, short revents)
{
	if (revents & (POLLIN | POLLHUP | POLLERR))
	{
		uint8_t		buf[65536];
		ssize_t		n;

		while ((n = read(c->fd, buf, sizeof(buf))) > 0)
		{
			if (nghttp2_session_mem_recv(c->h2, buf, n) < 0)
			{
				h2_reopen(c);
				return;
			}
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
		{
			h2_reopen(c);
			return;
		}
	}
	if (nghttp2_session_send(c->h2) != 0)
		h2_reopen(c);
}

/* ---- HTTP/1.1 ------------------------------------------------------------ */

/*
 * Length of a complete answer at the start of buf (NUL-terminated at len),
 * or 0 if incomplete.
 */
static size_t
answer_length(const char *buf, size_t len)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	const char *cl;
	size_t		head;

	if (end == NULL)
		return 0;
	head = end - buf + 4;
	cl = strcasestr(buf, "\r\ncontent-length:");
	if (cl == NULL || cl >= end)
		return head;
	head += strtoul(cl + 17, NULL, 10);
	return head <= len ? head : 0;
}

static void
h1_reopen(Conn *c)
{
	if (c->busy)
		log_answer(c->due_us, 0);
	close(c->fd);
	c->fd = connect_to();
	c->busy = 0;
	c->inlen = 0;
	c->outlen = 0;
	reconnects++;
}

static void
h1_flush(Conn *c)
{
	while (c->outlen > 0)
	{
		ssize_t		n = write(c->fd, c->out, c->outlen);

		if (n < 0)
		{
			/* The server may answer and close before reading the body. */
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->outlen = 0;
			return;
		}
		c->out += n;
		c->outlen -= n;
	}
}

static void
h1_submit(Conn *c, long long due)
{
	c->busy = 1;
	c->due_us = due;
	c->inlen = 0;
	c->out = h1_request;
	c->outlen = h1_request_len;
	nsent++;
	h1_flush(c);
}

static void
h1_io(Conn *c, short revents)
{
	if (revents & POLLOUT)
		h1_flush(c);
	if (revents & (POLLIN | POLLHUP | POLLERR))
	{
		ssize_t		n = read(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen - 1);
		size_t		alen;

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0)
		{
			h1_reopen(c);
			return;
		}
		c->inlen += n;
		c->in[c->inlen] = '\0';
		alen = answer_length(c->in, c->inlen);
		if (alen > 0 && c->busy)
		{
			c->in[c->inlen] = '\0';
			log_answer(c->due_us, atoi(c->in + 9));
			c->busy = 0;
			c->outlen = 0;
			/* A server that answered before the body and closes: reconnect. */
			if (memmem(c->in, alen, "onnection: close", 16) != NULL ||
				memmem(c->in, alen, "onnection: Close", 16) != NULL)
				h1_reopen(c);
			c->inlen = 0;
		}
		else if (c->inlen >= sizeof(c->in) - 1)
			c->inlen = 0;		/* an answer larger than we care to keep */
	}
}

/* ---- the loop ------------------------------------------------------------ */

static char *
read_file(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "r");
	long		n;
	char	   *buf;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) <= 0)
	{
		perror(path);
		exit(1);
	}
	rewind(f);
	buf = malloc(n);
	if (fread(buf, 1, n, f) != (size_t) n)
		exit(1);
	fclose(f);
	*len = n;
	return buf;
}

int
main(int argc, char **argv)
{
	static Conn conns[MAXCONN];
	static struct pollfd pfd[MAXCONN];
	int			nconn, i, next = 0;
	double		rate, seconds;
	long long	start, end, k = 0, queued_max = 0;
	long long  *queue;
	long long	qhead = 0, qtail = 0, qcap, unsent;
	struct rusage ru;

	if (argc != 9)
	{
		fprintf(stderr, "usage: %s h1|h2 PORT TOKEN BODY_FILE RATE SECONDS CONNS LOG\n", argv[0]);
		return 2;
	}
	/* A server may answer and close before reading the whole body. */
	signal(SIGPIPE, SIG_IGN);
	h2mode = strcmp(argv[1], "h2") == 0;
	port = atoi(argv[2]);
	token = argv[3];
	body = read_file(argv[4], &body_len);
	rate = atof(argv[5]);
	seconds = atof(argv[6]);
	nconn = atoi(argv[7]);
	if (nconn < 1 || nconn > MAXCONN)
		nconn = MAXCONN;
	logf = fopen(argv[8], "w");
	if (logf == NULL || rate <= 0)
	{
		perror(argv[8]);
		return 1;
	}
	h1_request = malloc(body_len + 1024);
	h1_request_len = snprintf(h1_request, 1024,
							  "POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
							  "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
							  "Content-Length: %zu\r\n\r\n", token, body_len);
	memcpy(h1_request + h1_request_len, body, body_len);
	h1_request_len += body_len;
	qcap = (long long) (rate * seconds) + 16;
	queue = malloc(sizeof(long long) * qcap);

	for (i = 0; i < nconn; i++)
	{
		if (h2mode)
			h2_open(&conns[i]);
		else
			conns[i].fd = connect_to();
	}

	start = now_us();
	end = start + (long long) (seconds * 1e6);
	for (;;)
	{
		long long	now = now_us();
		long long	due = start + (long long) (k / rate * 1e6);
		int			timeout,
					inflight = 0,
					tries;

		/* Every request due by now joins the queue... */
		while (due <= now && due < end && qtail < qcap)
		{
			queue[qtail++] = due;
			k++;
			due = start + (long long) (k / rate * 1e6);
		}
		if (qtail - qhead > queued_max)
			queued_max = qtail - qhead;
		/* ... and leaves it on any connection that can take it, round robin. */
		for (tries = 0; qhead < qtail && tries < nconn; next = (next + 1) % nconn)
		{
			Conn	   *c = &conns[next];

			if (h2mode ? h2_can_take(c) : !c->busy)
			{
				if (h2mode)
					h2_submit(c, queue[qhead++]);
				else
					h1_submit(c, queue[qhead++]);
				tries = 0;
			}
			else
				tries++;
		}
		for (i = 0; i < nconn; i++)
		{
			Conn	   *c = &conns[i];

			if (h2mode)
			{
				nghttp2_session_send(c->h2);
				inflight += c->nstreams;
			}
			else
				inflight += c->busy;
			pfd[i].fd = c->fd;
			pfd[i].events = POLLIN;
			if (h2mode ? nghttp2_session_want_write(c->h2) : c->outlen > 0)
				pfd[i].events |= POLLOUT;
		}
		if (now >= end && (inflight == 0 || now >= end + DRAIN_US))
			break;
		timeout = due > now ? (int) ((due - now + 999) / 1000) : 0;
		if (now >= end)
			timeout = 50;
		if (poll(pfd, nconn, timeout) < 0 && errno != EINTR)
		{
			perror("poll");
			return 1;
		}
		for (i = 0; i < nconn; i++)
		{
			if (pfd[i].revents == 0)
				continue;
			if (h2mode)
				h2_io(&conns[i], pfd[i].revents);
			else
				h1_io(&conns[i], pfd[i].revents);
		}
	}
	/* Still in flight after the drain: lost; still queued: never sent. */
	unsent = qtail - qhead;
	for (i = 0; i < nconn; i++)
	{
		if (h2mode)
			h2_drop(&conns[i]);
		else if (conns[i].busy)
			log_answer(conns[i].due_us, 0);
	}
	for (; qhead < qtail; qhead++)
		fprintf(logf, "%lld\t-1\t%lld\n", queue[qhead], now_us() - queue[qhead]);
	fclose(logf);
	getrusage(RUSAGE_SELF, &ru);
	printf("flood_load %s: due %lld sent %lld answered %lld (202 %lld, 429 %lld) lost %lld unsent %lld "
		   "in %.2f s; most queued %lld; reconnects %lld; client cpu %.2f s\n",
		   argv[1], k, nsent, nanswered, status_count[202], status_count[429], nlost,
		   unsent, (now_us() - start) / 1e6, queued_max, reconnects,
		   ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	return 0;
}
