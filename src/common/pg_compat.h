/*-------------------------------------------------------------------------
 * pg_compat.h
 *	  The PostgreSQL API differences between the majors we build against
 *	  (15 on Debian 12, 17 on Debian 13; 16 too), in one place.
 *
 * Only what more than one file needs lives here; a difference that one
 * file meets once stays an #if PG_VERSION_NUM beside its use.  Usable in
 * the backend and with -DFRONTEND (the fuzz harness).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_PG_COMPAT_H
#define MACHPAY_PG_COMPAT_H

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

/*
 * JSON semantic actions return a JsonParseErrorType from 16 on (an action
 * may stop the parse); before, they return nothing.  Write an action as
 *	 static JSON_ACTION_RETURN f(void *state) { ...; JSON_ACTION_OK; }
 */
#if PG_VERSION_NUM >= 160000
#define JSON_ACTION_RETURN JsonParseErrorType
#define JSON_ACTION_OK return JSON_SUCCESS
#else
#define JSON_ACTION_RETURN void
#define JSON_ACTION_OK return
#endif

/*
 * A UTF-8 lexer over len bytes of text that keeps de-escaped strings, and
 * its release.  17 takes a lexer to fill (NULL: allocate one) and a size_t
 * length, and frees the lexer with everything it allocated.
 */
#if PG_VERSION_NUM >= 170000
#define machpay_json_lexer(text, len) \
	makeJsonLexContextCstringLen(NULL, (text), (len), PG_UTF8, true)
#define machpay_json_lexer_free(lex) freeJsonLexContext(lex)
#else
#define machpay_json_lexer(text, len) \
	makeJsonLexContextCstringLen(unconstify(char *, (text)), (int) (len), PG_UTF8, true)
static inline void
machpay_json_lexer_free(JsonLexContext *lex)
{
	if (lex->strval)
	{
		pfree(lex->strval->data);
		pfree(lex->strval);
	}
	pfree(lex);
}
#endif

#endif							/* MACHPAY_PG_COMPAT_H */
