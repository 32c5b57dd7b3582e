/*-------------------------------------------------------------------------
 * h1_parser.h
 *	  HTTP/1.1 request parsing, behind one small interface so that the
 *	  parser library (http_parser today, llhttp later: same callback model)
 *	  can change in h1_parser.c alone.
 *
 * The parser is fed bytes and reports complete pieces: the request target,
 * each header, the end of the head, body bytes (chunking removed) and the
 * end of the message.  A callback returns true to go on or false to pause:
 * h1_parser_feed then returns how many bytes it used, and the next call
 * goes on from there.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_H1_PARSER_H
#define MACHPAY_H1_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct H1Head
{
	const char *method;
	bool		keep_alive;
	bool		chunked;
	int64_t		content_length; /* -1: none */
} H1Head;

typedef struct H1Callbacks
{
	bool		(*on_target) (void *ctx, const char *at, size_t len);
	bool		(*on_header) (void *ctx, const char *name, size_t nlen,
							  const char *value, size_t vlen);
	bool		(*on_head) (void *ctx, const H1Head *head);
	bool		(*on_body) (void *ctx, const char *at, size_t len);
	bool		(*on_done) (void *ctx);
} H1Callbacks;

typedef struct H1Parser H1Parser;

extern H1Parser *h1_parser_create(const H1Callbacks *cb, void *ctx);
extern void h1_parser_free(H1Parser *p);
/* Bytes used; *failed set (and the parser unusable) on a syntax error. */
extern size_t h1_parser_feed(H1Parser *p, const char *data, size_t len, bool *failed);
extern const char *h1_parser_error(H1Parser *p);
/* Body bytes still to come of a Content-Length body, or -1. */
extern int64_t h1_parser_body_left(H1Parser *p);
/* Forgets the message being read: the next byte starts a new one. */
extern void h1_parser_reset(H1Parser *p);
/* The peer closed: does that end a message cleanly? */
extern bool h1_parser_finish(H1Parser *p);

#endif							/* MACHPAY_H1_PARSER_H */
