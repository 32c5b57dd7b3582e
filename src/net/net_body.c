/*-------------------------------------------------------------------------
 * net_body.c
 *	  What a request holds: its path, its headers and its body, filled from
 *	  the protocol parsers' callbacks, so in malloc'ed memory.
 *
 * A gzip body is inflated as its bytes arrive; the limit applies to what
 * it inflates to, so a bomb stops at max_body_size, not at its end.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <zlib.h>

#include "net/net_int.h"

#define BODY_FIRST_CAP		(16 * 1024)
#define INFLATE_STEP		(64 * 1024)

typedef struct Inflater
{
	z_stream	zs;
	bool		member_ended;	/* the last gzip member ended */
} Inflater;

static char *
dup_bytes(const char *s, size_t len, bool lower)
{
	char	   *d = malloc(len + 1);

	if (d == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++)
		d[i] = (lower && s[i] >= 'A' && s[i] <= 'Z') ? s[i] + ('a' - 'A') : s[i];
	d[len] = '\0';
	return d;
}

bool
net_req_add_header(NetRequest *req, const char *name, size_t nlen,
				   const char *value, size_t vlen)
{
	NetHeader  *h;

	if (req->nheaders == req->headers_cap)
	{
		int			cap = req->headers_cap ? req->headers_cap * 2 : 16;
		NetHeader  *n = realloc(req->headers, sizeof(NetHeader) * cap);

		if (n == NULL)
			return false;
		req->headers = n;
		req->headers_cap = cap;
	}
	h = &req->headers[req->nheaders];
	h->name = dup_bytes(name, nlen, true);
	h->value = dup_bytes(value, vlen, false);
	h->value_len = vlen;
	if (h->name == NULL || h->value == NULL)
	{
		free(h->name);
		free(h->value);
		return false;
	}
	req->nheaders++;
	return true;
}

/* Splits the request target into path and query. */
bool
net_req_set_path(NetRequest *req, const char *target, size_t len)
{
	const char *q = memchr(target, '?', len);
	size_t		plen = q ? (size_t) (q - target) : len;

	free(req->path);
	free(req->query);
	req->path = dup_bytes(target, plen, false);
	req->query = q ? dup_bytes(q + 1, len - plen - 1, false) : NULL;
	return req->path != NULL && (q == NULL || req->query != NULL);
}

void
net_req_free(NetRequest *req)
{
	for (int i = 0; i < req->nheaders; i++)
	{
		free(req->headers[i].name);
		free(req->headers[i].value);
	}
	free(req->headers);
	free(req->path);
	free(req->query);
	free(req->body);
	free(req->raw);
	free(req->out);
	if (req->zs)
	{
		inflateEnd(&((Inflater *) req->zs)->zs);
		free(req->zs);
	}
	free(req);
}

/* Prepares the body buffer; false if out of memory. */
bool
net_body_begin(NetRequest *req)
{
	size_t		first = BODY_FIRST_CAP;

	if (req->content_length > 0 && !req->gzip)
		first = Min((size_t) req->content_length, req->body_limit) + 1;
	req->body = malloc(first);
	if (req->body == NULL)
		return false;
	req->body_cap = first;
	req->body_len = 0;
	req->body_wire_len = 0;
	req->body_status = NET_BODY_OK;
	if (req->gzip)
	{
		Inflater   *inf = calloc(1, sizeof(Inflater));

		if (inf == NULL)
			return false;
		if (inflateInit2(&inf->zs, 16 + MAX_WBITS) != Z_OK)
		{
			free(inf);
			return false;
		}
		req->zs = inf;
	}
	return true;
}

static void
inflate_more(NetRequest *req, const char *data, size_t len)
{
	Inflater   *inf = req->zs;

	inf->zs.next_in = (Bytef *) data;
	inf->zs.avail_in = len;
	while (inf->zs.avail_in > 0 && req->body_status == NET_BODY_OK)
	{
		int			ret;

		if (inf->member_ended)
		{
			/* Concatenated gzip members are one body. */
			if (inflateReset(&inf->zs) != Z_OK)
			{
				req->body_status = NET_BODY_BAD_ENCODING;
				return;
			}
			inf->member_ended = false;
		}
		if (req->body_cap - req->body_len < INFLATE_STEP / 2 &&
			!net_buf_reserve(&req->body, &req->body_cap, req->body_len, INFLATE_STEP))
		{
			req->body_status = NET_BODY_TOO_LARGE;
			return;
		}
		inf->zs.next_out = (Bytef *) req->body + req->body_len;
		inf->zs.avail_out = req->body_cap - req->body_len - 1;
		ret = inflate(&inf->zs, Z_NO_FLUSH);
		req->body_len = (char *) inf->zs.next_out - req->body;
		if (req->body_len > req->body_limit)
			req->body_status = NET_BODY_TOO_LARGE;
		else if (ret == Z_STREAM_END)
			inf->member_ended = true;
		else if (ret != Z_OK && ret != Z_BUF_ERROR)
			req->body_status = NET_BODY_BAD_ENCODING;
	}
}

/* Takes body bytes; past the limit or on bad gzip the rest is ignored. */
void
net_body_append(NetRequest *req, const char *data, size_t len)
{
	if (req->body_status != NET_BODY_OK || len == 0)
		return;
	req->body_wire_len += len;
	if (req->zs)
	{
		inflate_more(req, data, len);
		return;
	}
	if (req->body_len + len > req->body_limit)
	{
		req->body_status = NET_BODY_TOO_LARGE;
		return;
	}
	if (!net_buf_reserve(&req->body, &req->body_cap, req->body_len, len + 1))
	{
		req->body_status = NET_BODY_TOO_LARGE;
		return;
	}
	memcpy(req->body + req->body_len, data, len);
	req->body_len += len;
}

/* The body ended: a gzip stream must have ended too. */
void
net_body_finish(NetRequest *req)
{
	if (req->zs && req->body_status == NET_BODY_OK &&
		!((Inflater *) req->zs)->member_ended)
		req->body_status = NET_BODY_BAD_ENCODING;
	if (req->body)
		req->body[req->body_len] = '\0';
}

const char *
net_status_reason(int status)
{
	switch (status)
	{
		case 100: return "Continue";
		case 200: return "OK";
		case 202: return "Accepted";
		case 204: return "No Content";
		case 400: return "Bad Request";
		case 401: return "Unauthorized";
		case 403: return "Forbidden";
		case 404: return "Not Found";
		case 405: return "Method Not Allowed";
		case 408: return "Request Timeout";
		case 411: return "Length Required";
		case 413: return "Payload Too Large";
		case 415: return "Unsupported Media Type";
		case 422: return "Unprocessable Entity";
		case 429: return "Too Many Requests";
		case 431: return "Request Header Fields Too Large";
		case 500: return "Internal Server Error";
		case 503: return "Service Unavailable";
		default: return "Unknown";
	}
}

/* The first value of a header (name in lower case), or NULL. */
const char *
net_header(NetRequest *req, const char *lname, size_t *len)
{
	for (int i = 0; i < req->nheaders; i++)
	{
		if (strcmp(req->headers[i].name, lname) == 0)
		{
			if (len)
				*len = req->headers[i].value_len;
			return req->headers[i].value;
		}
	}
	return NULL;
}
