/*-------------------------------------------------------------------------
 * http_reply.c
 *	  Answers of both servers, every error in the JSON of SPEC §4.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/json.h"

#include "common/stats.h"
#include "net/http_reply.h"

static bool counting = false;
static const char *cors_origin = NULL;

void
http_reply_set_counting(bool count)
{
	counting = count;
}

/* Access-Control-Allow-Origin on every answer (the SSE relay). */
void
http_reply_set_cors(const char *allow_origin)
{
	cors_origin = (allow_origin && allow_origin[0]) ? allow_origin : NULL;
}

void
http_count_status(int status)
{
	StatCounter c;

	if (!counting)
		return;
	switch (status)
	{
		case 200: c = STAT_HTTP_REQUESTS_200; break;
		case 202: c = STAT_HTTP_REQUESTS_202; break;
		case 400: c = STAT_HTTP_REQUESTS_400; break;
		case 401: c = STAT_HTTP_REQUESTS_401; break;
		case 403: c = STAT_HTTP_REQUESTS_403; break;
		case 404: c = STAT_HTTP_REQUESTS_404; break;
		case 405: c = STAT_HTTP_REQUESTS_405; break;
		case 408: c = STAT_HTTP_REQUESTS_408; break;
		case 411: c = STAT_HTTP_REQUESTS_411; break;
		case 413: c = STAT_HTTP_REQUESTS_413; break;
		case 415: c = STAT_HTTP_REQUESTS_415; break;
		case 422: c = STAT_HTTP_REQUESTS_422; break;
		case 429: c = STAT_HTTP_REQUESTS_429; break;
		case 500: c = STAT_HTTP_REQUESTS_500; break;
		case 503: c = STAT_HTTP_REQUESTS_503; break;
		default: c = STAT_HTTP_REQUESTS_OTHER; break;
	}
	stats_add(c, 1);
}

void
http_reply_text(NetRequest *req, int status, const char *content_type,
				const char *const *extra, const char *body, size_t len)
{
	const char *h[2 * (HTTP_REPLY_MAX_EXTRA + 3) + 1];
	int			n = 0;

	h[n++] = "content-type";
	h[n++] = content_type;
	h[n++] = "cache-control";
	h[n++] = "no-store";
	if (cors_origin)
	{
		h[n++] = "access-control-allow-origin";
		h[n++] = cors_origin;
	}
	for (int i = 0; extra && extra[i] && i < 2 * HTTP_REPLY_MAX_EXTRA; i += 2)
	{
		h[n++] = extra[i];
		h[n++] = extra[i + 1];
	}
	h[n] = NULL;
	http_count_status(status);
	net_respond(req, status, h, body, len);
}

void
http_reply_json(NetRequest *req, int status, const char *const *extra,
				const char *body, size_t len)
{
	http_reply_text(req, status, "application/json", extra, body, len);
}

void
http_reply_error(NetRequest *req, int status, const char *const *extra,
				 const char *code, const char *message)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"error\":");
	escape_json(&buf, code);
	appendStringInfoString(&buf, ",\"message\":");
	escape_json(&buf, message);
	appendStringInfoChar(&buf, '}');
	http_reply_json(req, status, extra, buf.data, buf.len);
	pfree(buf.data);
}
