/*
 * intent_load.c
 *		Open-loop load generator for payment intents: RATE requests/s for
 *		SECONDS over CONNS keep-alive HTTP/1.1 connections, each request one
 *		payment_intent with its own nonce (h2load repeats one body, so every
 *		intent after the first would be a duplicate).  Request k is due at
 *		start + k / RATE and goes out on the first idle connection; when none
 *		is idle it waits, and that wait counts: latency is measured from when
 *		the request was due, not from when it was sent (no coordinated
 *		omission).  One line per answer in LOG, like h2load's --log-file:
 *		due time (us since epoch), HTTP status, microseconds from due to the
 *		end of the answer; then the request's nonce, the microseconds it
 *		waited for a connection (and the answer's intent id with INTENT_IDS=1).
 *
 *		With BODY_FILE set in the environment it posts that file instead
 *		(telemetry latency without h2load's --rps timer).
 *
 * Build: cc -O2 -o intent_load bench/intent_load.c
 * Usage: intent_load PORT TOKEN RATE SECONDS CONNS LOG [NONCE_BASE]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAXCONN 256

typedef struct Conn
{
	int			fd;
	int			busy;
	long long	due_us;			/* when its request was due */
	long long	sent_us;
	unsigned long long nonce;	/* of the request in flight */
	char		buf[8192];
	size_t		len;
} Conn;

static long long
now_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (long long) tv.tv_sec * 1000000 + tv.tv_usec;
}

static int
connect_to(int port)
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
	return fd;
}

/* Length of a complete answer at the start of buf, or 0 if incomplete. */
static size_t
answer_length(const char *buf, size_t len)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	const char *cl;
	size_t		head;

	if (end == NULL)
		return 0;
	head = end - buf + 4;
	cl = memmem(buf, head, "content-length:", 15);
	if (cl == NULL)
		cl = memmem(buf, head, "Content-Length:", 15);
	if (cl == NULL)
		return head;
	head += strtoul(cl + 15, NULL, 10);
	return head <= len ? head : 0;
}

/* One log line: due time, status, latency from due, nonce, wait for a connection [, id]. */
static void
log_answer(FILE *log, const Conn *c, int status)
{
	const char *id = NULL;

	if (status == 200 && getenv("INTENT_IDS"))
		id = strstr(c->buf, "\"id\":\"");
	fprintf(log, "%lld\t%d\t%lld\t%llu\t%lld", c->due_us, status,
			now_us() - c->due_us, c->nonce, c->sent_us - c->due_us);
	if (id)
		fprintf(log, "\t%.36s", id + 6);
	fputc('\n', log);
}

int
main(int argc, char **argv)
{
	static Conn conns[MAXCONN];
	struct pollfd pfd[MAXCONN];
	int			port, nconn, i;
	double		rate, seconds;
	const char *token;
	FILE	   *log;
	unsigned long long nonce_base;
	long long	start, end, k = 0, late = 0, done = 0, reconnects = 0;
	char	   *fixed = NULL;
	long		fixed_len = 0;
	char	   *req = malloc(1 << 24);

	if (argc < 7)
	{
		fprintf(stderr, "usage: %s PORT TOKEN RATE SECONDS CONNS LOG [NONCE_BASE]\n", argv[0]);
		return 2;
	}
	port = atoi(argv[1]);
	token = argv[2];
	rate = atof(argv[3]);
	seconds = atof(argv[4]);
	nconn = atoi(argv[5]);
	if (nconn < 1 || nconn > MAXCONN)
		nconn = MAXCONN;
	log = fopen(argv[6], "w");
	nonce_base = argc > 7 ? strtoull(argv[7], NULL, 10) : (unsigned long long) now_us() * 1000;
	if (log == NULL)
	{
		perror(argv[6]);
		return 1;
	}
	if (getenv("BODY_FILE"))
	{
		FILE	   *f = fopen(getenv("BODY_FILE"), "r");

		if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (fixed_len = ftell(f)) <= 0)
		{
			perror("BODY_FILE");
			return 1;
		}
		rewind(f);
		fixed = malloc(fixed_len + 1);
		if (fread(fixed, 1, fixed_len, f) != (size_t) fixed_len)
			return 1;
		fclose(f);
	}
	for (i = 0; i < nconn; i++)
		conns[i].fd = connect_to(port);

	start = now_us();
	end = start + (long long) (seconds * 1e6);
	for (;;)
	{
		long long	now = now_us();
		long long	due = start + (long long) (k / rate * 1e6);
		int			timeout, nbusy = 0;

		/* Send every request that is due, on idle connections. */
		while (due <= now && due < end)
		{
			char		body[512];
			int			blen, rlen;

			for (i = 0; i < nconn && conns[i].busy; i++)
				;
			if (i == nconn)
			{
				late++;
				break;
			}
			blen = snprintf(body, sizeof(body),
							"{\"source\":\"payment_intent\","
							"\"gateway_id\":\"BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp\","
							"\"agent_id\":\"QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg\","
							"\"nonce\":\"%llu\",\"amount\":5000,"
							"\"token\":\"4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1\","
							"\"signature\":\"3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt\"}",
							nonce_base + (unsigned long long) k);
			rlen = snprintf(req, 1024,
							"POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
							"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
							"Content-Length: %ld\r\n\r\n", token, fixed ? fixed_len : (long) blen);
			memcpy(req + rlen, fixed ? fixed : body, fixed ? fixed_len : blen);
			rlen += fixed ? fixed_len : blen;
			conns[i].due_us = due;
			conns[i].sent_us = now_us();
			conns[i].nonce = nonce_base + (unsigned long long) k;
			if (write(conns[i].fd, req, rlen) != rlen)
			{
				perror("write");
				return 1;
			}
			conns[i].busy = 1;
			conns[i].len = 0;
			k++;
			due = start + (long long) (k / rate * 1e6);
		}
		for (i = 0; i < nconn; i++)
		{
			pfd[i].fd = conns[i].fd;
			pfd[i].events = POLLIN;
			nbusy += conns[i].busy;
		}
		if (now >= end && nbusy == 0)
			break;
		timeout = due > now ? (int) ((due - now + 999) / 1000) : 1;
		if (now >= end)
			timeout = 100;
		if (poll(pfd, nconn, timeout) < 0 && errno != EINTR)
		{
			perror("poll");
			return 1;
		}
		for (i = 0; i < nconn; i++)
		{
			Conn	   *c = &conns[i];
			ssize_t		r;
			size_t		alen;

			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len - 1);
			if (r <= 0)
			{
				/* Closed by the server (e.g. after an error answer): reconnect. */
				if (c->busy)
					log_answer(log, c, 0);
				close(c->fd);
				c->fd = connect_to(port);
				c->busy = 0;
				c->len = 0;
				reconnects++;
				continue;
			}
			c->len += r;
			alen = answer_length(c->buf, c->len);
			if (alen > 0 && c->busy)
			{
				c->buf[c->len] = '\0';
				log_answer(log, c, atoi(c->buf + 9));
				c->busy = 0;
				c->len = 0;
				done++;
			}
		}
	}
	fclose(log);
	printf("sent %lld answered %lld in %.1f s (%.0f/s); %lld times no idle connection was free when a request was due (the wait is counted in the latency); %lld reconnects\n",
		   k, done, (now_us() - start) / 1e6, done / ((now_us() - start) / 1e6), late, reconnects);
	return 0;
}
