/*
 * sse_bench_client: N Server-Sent-Events clients on one epoll loop.
 *
 * Each client streams GET /v1/stream?types=bench; every event's payload
 * carries "t":<unix seconds at the sender's commit>, and the client records
 * now - t as the commit-to-client latency.  Prints "connected N" once all
 * streams answered 200, and at the end the count and p50/p99/max latency.
 *
 * Usage: sse_bench_client PORT TOKEN CLIENTS SECONDS
 *   env TYPES: the ?types= filter (default bench; empty: every type).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <arpa/inet.h>
#include <unistd.h>

typedef struct Conn
{
	int			fd;
	int			started;		/* got the response headers */
	size_t		len;
	char		buf[65536];
} Conn;

static double *lat;
static size_t nlat, maxlat;

static double
now_s(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

static int
cmp(const void *a, const void *b)
{
	double		x = *(const double *) a, y = *(const double *) b;

	return x < y ? -1 : x > y;
}

static size_t nevents;			/* events of any type received */
static int	nclosed;			/* streams the relay closed */

/* Consumes the complete events ("\n\n"-terminated) in c->buf. */
static void
scan(Conn *c)
{
	char	   *p = c->buf;
	char	   *end = c->buf + c->len;
	char	   *ev_end;

	if (!c->started)
	{
		char	   *h = memmem(p, c->len, "\r\n\r\n", 4);

		if (!h)
			return;
		if (strncmp(p, "HTTP/1.1 200", 12) != 0)
		{
			fprintf(stderr, "bad response: %.40s\n", p);
			exit(1);
		}
		c->started = 1;
		p = h + 4;
	}
	while ((ev_end = memmem(p, end - p, "\n\n", 2)) != NULL)
	{
		char	   *t = memmem(p, ev_end - p, "\"t\":", 4);

		if (memmem(p, ev_end - p, "event:", 6) != NULL)
			nevents++;
		if (t && nlat < maxlat)
			lat[nlat++] = now_s() - strtod(t + 4, NULL);
		p = ev_end + 2;
	}
	c->len = end - p;
	memmove(c->buf, p, c->len);
}

int
main(int argc, char **argv)
{
	int			port, n, secs, ep, i, connected = 0, announced = 0;
	const char *token;
	Conn	   *conns;
	struct sockaddr_in sa;
	char		req[512];
	double		deadline;

	if (argc != 5)
	{
		fprintf(stderr, "usage: %s PORT TOKEN CLIENTS SECONDS\n", argv[0]);
		return 2;
	}
	port = atoi(argv[1]);
	token = argv[2];
	n = atoi(argv[3]);
	secs = atoi(argv[4]);
	maxlat = 50 * 1000 * 1000;
	lat = malloc(sizeof(double) * maxlat);
	conns = calloc(n, sizeof(Conn));
	ep = epoll_create1(0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* TYPES (environment): the stream's type filter, "" for every type */
	snprintf(req, sizeof(req),
			 "GET /v1/stream%s%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			 "Authorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n",
			 getenv("TYPES") && !*getenv("TYPES") ? "" : "?types=",
			 getenv("TYPES") ? getenv("TYPES") : "bench", token);
	for (i = 0; i < n; i++)
	{
		struct epoll_event ev;

		conns[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(conns[i].fd, (struct sockaddr *) &sa, sizeof(sa)) != 0)
		{
			perror("connect");
			return 1;
		}
		if (write(conns[i].fd, req, strlen(req)) != (ssize_t) strlen(req))
		{
			perror("write");
			return 1;
		}
		fcntl(conns[i].fd, F_SETFL, O_NONBLOCK);
		ev.events = EPOLLIN;
		ev.data.ptr = &conns[i];
		epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
	}
	deadline = now_s() + secs;
	while (now_s() < deadline)
	{
		struct epoll_event evs[256];
		int			k = epoll_wait(ep, evs, 256, 100);

		for (i = 0; i < k; i++)
		{
			Conn	   *c = evs[i].data.ptr;
			ssize_t		r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);

			if (r <= 0)
			{
				if (r < 0 && errno == EAGAIN)
					continue;
				fprintf(stderr, "connection closed by the relay\n");
				nclosed++;
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				continue;
			}
			c->len += r;
			if (!c->started)
			{
				scan(c);
				if (c->started)
					connected++;
			}
			else
				scan(c);
		}
		if (!announced && connected == n)
		{
			printf("connected %d\n", n);
			fflush(stdout);
			announced = 1;
		}
	}
	qsort(lat, nlat, sizeof(double), cmp);
	if (nlat == 0)
		printf("events 0\n");
	else
		printf("events %zu p50_ms %.2f p99_ms %.2f max_ms %.2f\n", nlat,
			   lat[nlat / 2] * 1000, lat[(size_t) (nlat * 0.99)] * 1000, lat[nlat - 1] * 1000);
	printf("received %zu events of any type; %d streams closed by the relay\n", nevents, nclosed);
	return 0;
}
