/*-------------------------------------------------------------------------
 * h1_parser.c
 *	  h1_parser.h on Debian's http_parser (libhttp-parser).
 *
 * http_parser hands the target and each header name and value in as many
 * pieces as the reads split them into; they are joined here (malloc'ed:
 * this runs inside the library's callbacks) and passed on whole.
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "net/h1_parser.h"

struct H1Parser
{
	http_parser hp;
	http_parser_settings settings;
	const H1Callbacks *cb;
	void	   *ctx;
	char	   *name;			/* header name being read */
	size_t		name_len;
	size_t		name_cap;
	char	   *value;
	size_t		value_len;
	size_t		value_cap;
	bool		in_value;
	bool		target_sent;
	bool		oom;
};

static bool
append(char **buf, size_t *len, size_t *cap, const char *at, size_t n)
{
	if (*len + n + 1 > *cap)
	{
		size_t		ncap = *cap ? *cap : 256;
		char	   *b;

		while (ncap < *len + n + 1)
			ncap *= 2;
		b = realloc(*buf, ncap);
		if (b == NULL)
			return false;
		*buf = b;
		*cap = ncap;
	}
	memcpy(*buf + *len, at, n);
	*len += n;
	(*buf)[*len] = '\0';
	return true;
}

static int
pause_unless(H1Parser *p, bool go_on)
{
	if (!go_on)
		http_parser_pause(&p->hp, 1);
	return 0;
}

/* Passes the target (kept in name until the first header) on, once. */
static bool
flush_target(H1Parser *p)
{
	bool		ok = true;

	if (!p->target_sent)
	{
		p->target_sent = true;
		ok = p->cb->on_target(p->ctx, p->name ? p->name : "", p->name_len);
		p->name_len = 0;
	}
	return ok;
}

static bool
flush_header(H1Parser *p)
{
	bool		ok = true;

	if (p->in_value)
	{
		ok = p->cb->on_header(p->ctx, p->name, p->name_len,
							  p->value ? p->value : "", p->value_len);
		p->name_len = p->value_len = 0;
		p->in_value = false;
	}
	return ok;
}

static int
on_message_begin(http_parser *hp)
{
	H1Parser   *p = hp->data;

	p->name_len = p->value_len = 0;
	p->in_value = false;
	p->target_sent = false;
	return 0;
}

static int
on_url(http_parser *hp, const char *at, size_t len)
{
	H1Parser   *p = hp->data;

	if (!append(&p->name, &p->name_len, &p->name_cap, at, len))
		p->oom = true;
	return p->oom ? -1 : 0;
}

static int
on_header_field(http_parser *hp, const char *at, size_t len)
{
	H1Parser   *p = hp->data;
	bool		go_on = flush_target(p) && flush_header(p);

	if (!append(&p->name, &p->name_len, &p->name_cap, at, len))
	{
		p->oom = true;
		return -1;
	}
	return pause_unless(p, go_on);
}

static int
on_header_value(http_parser *hp, const char *at, size_t len)
{
	H1Parser   *p = hp->data;

	p->in_value = true;
	if (!append(&p->value, &p->value_len, &p->value_cap, at, len))
	{
		p->oom = true;
		return -1;
	}
	return 0;
}

static int
on_headers_complete(http_parser *hp)
{
	H1Parser   *p = hp->data;
	H1Head		head;
	bool		go_on = flush_target(p) && flush_header(p);

	head.method = http_method_str((enum http_method) hp->method);
	head.keep_alive = http_should_keep_alive(hp) != 0;
	head.chunked = (hp->flags & F_CHUNKED) != 0;
	head.content_length = (hp->flags & F_CONTENTLENGTH) && !head.chunked ?
		(int64_t) hp->content_length : -1;
	go_on = p->cb->on_head(p->ctx, &head) && go_on;
	return pause_unless(p, go_on);
}

static int
on_body(http_parser *hp, const char *at, size_t len)
{
	H1Parser   *p = hp->data;

	return pause_unless(p, p->cb->on_body(p->ctx, at, len));
}

static int
on_message_complete(http_parser *hp)
{
	H1Parser   *p = hp->data;

	return pause_unless(p, p->cb->on_done(p->ctx));
}

H1Parser *
h1_parser_create(const H1Callbacks *cb, void *ctx)
{
	H1Parser   *p = calloc(1, sizeof(H1Parser));

	if (p == NULL)
		return NULL;
	http_parser_init(&p->hp, HTTP_REQUEST);
	p->hp.data = p;
	http_parser_settings_init(&p->settings);
	p->settings.on_message_begin = on_message_begin;
	p->settings.on_url = on_url;
	p->settings.on_header_field = on_header_field;
	p->settings.on_header_value = on_header_value;
	p->settings.on_headers_complete = on_headers_complete;
	p->settings.on_body = on_body;
	p->settings.on_message_complete = on_message_complete;
	p->cb = cb;
	p->ctx = ctx;
	return p;
}

void
h1_parser_free(H1Parser *p)
{
	if (p == NULL)
		return;
	free(p->name);
	free(p->value);
	free(p);
}

size_t
h1_parser_feed(H1Parser *p, const char *data, size_t len, bool *failed)
{
	size_t		used;
	enum http_errno err;

	if (HTTP_PARSER_ERRNO(&p->hp) == HPE_PAUSED)
		http_parser_pause(&p->hp, 0);
	used = http_parser_execute(&p->hp, &p->settings, data, len);
	err = HTTP_PARSER_ERRNO(&p->hp);
	*failed = (err != HPE_OK && err != HPE_PAUSED) || p->oom;
	return used;
}

int64_t
h1_parser_body_left(H1Parser *p)
{
	if (!(p->hp.flags & F_CONTENTLENGTH) || (p->hp.flags & F_CHUNKED))
		return -1;
	return (int64_t) p->hp.content_length;
}

void
h1_parser_reset(H1Parser *p)
{
	http_parser_init(&p->hp, HTTP_REQUEST);
	p->hp.data = p;
	p->name_len = p->value_len = 0;
	p->in_value = false;
	p->target_sent = false;
}

const char *
h1_parser_error(H1Parser *p)
{
	if (p->oom)
		return "out of memory";
	return http_errno_description(HTTP_PARSER_ERRNO(&p->hp));
}

bool
h1_parser_finish(H1Parser *p)
{
	bool		failed;

	(void) h1_parser_feed(p, NULL, 0, &failed);
	return !failed;
}
