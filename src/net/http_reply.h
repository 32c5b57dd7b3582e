/*-------------------------------------------------------------------------
 * http_reply.h
 *	  Answers of both servers: JSON bodies, the error body of SPEC §4
 *	  ({"error":"<code>","message":"..."}), and the count of answers by
 *	  status (ingest workers only).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_HTTP_REPLY_H
#define MACHPAY_HTTP_REPLY_H

#include "net/net.h"

/* Most extra response headers an answer takes (name, value pairs). */
#define HTTP_REPLY_MAX_EXTRA	4

extern void http_reply_set_counting(bool count);
extern void http_reply_set_cors(const char *allow_origin);
extern void http_count_status(int status);
extern void http_reply_json(NetRequest *req, int status, const char *const *extra,
							const char *body, size_t len);
extern void http_reply_error(NetRequest *req, int status, const char *const *extra,
							 const char *code, const char *message);
extern void http_reply_text(NetRequest *req, int status, const char *content_type,
							const char *const *extra, const char *body, size_t len);

#endif							/* MACHPAY_HTTP_REPLY_H */
