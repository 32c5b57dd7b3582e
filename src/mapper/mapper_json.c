/*-------------------------------------------------------------------------
 * mapper_json.c
 *	  The request-text front end of the event mapper: parses a body with
 *	  PostgreSQL's own JSON parser (common/jsonapi.h, semantic actions, no
 *	  tree) and feeds its tokens to the leaf walker (mapper_walk.c).
 *
 * A body is one event object, an array of events, or NDJSON: one event per
 * non-empty line, where an event's index is the line's 0-based position
 * among the non-empty lines (lines holding only white space are skipped and
 * not counted).  A top-level value that is not an object is one event with
 * an invalid_type error; invalid JSON anywhere, invalid UTF-8, or nesting
 * deeper than max_depth makes the whole request bad and nothing is kept.
 * Compiles in the backend and with -DFRONTEND (the fuzz harness).
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "common/json_depth.h"
#include "mapper/mapper.h"
#include "mapper/mapper_int.h"
#include "common/pg_compat.h"

/*
 * The walk over one JSON document (the body, or one NDJSON line): the
 * parser's semantic actions pass its tokens on to the leaf walker.
 */
typedef struct JsonWalk
{
	MapWalk    *walk;
	JsonLexContext *lex;
	const char *elem_start;		/* where the current event's value starts */
	const char *fields_start;	/* where the event's "fields" value starts */
} JsonWalk;

static MapLeafType
leaf_type_of(JsonTokenType type)
{
	switch (type)
	{
		case JSON_TOKEN_STRING:
			return LEAF_STRING;
		case JSON_TOKEN_NUMBER:
			return LEAF_NUMBER;
		case JSON_TOKEN_TRUE:
			return LEAF_TRUE;
		case JSON_TOKEN_FALSE:
			return LEAF_FALSE;
		default:
			return LEAF_NULL;
	}
}

/* A rejected event's excerpt: its text as sent, up to the last token read. */
static char *
text_excerpt(void *arg, int *len)
{
	JsonWalk   *w = (JsonWalk *) arg;

	*len = (int) (w->lex->prev_token_terminator - w->elem_start);
	return (char *) w->elem_start;
}

/*
 * Once the request is refused (a cap), make the lexer see the end of the
 * input: the parser then stops with an error that walk_document ignores,
 * so the rest of the body costs nothing.
 */
static void
walk_stop_if_refused(JsonWalk *w)
{
	size_t		here;

	if (!map_walk_stopped(w->walk))
		return;
	here = (size_t) (w->lex->token_terminator - w->lex->input);
	if (here < (size_t) w->lex->input_length)
		w->lex->input_length = here;
}

static JSON_ACTION_RETURN
walk_object_start(void *state)
{
	JsonWalk   *w = (JsonWalk *) state;

	if (map_walk_object_begin(w->walk))
	{
		w->elem_start = w->lex->token_start;
		w->fields_start = NULL;
	}
	walk_stop_if_refused(w);
	JSON_ACTION_OK;
}

static JSON_ACTION_RETURN
walk_object_end(void *state)
{
	JsonWalk   *w = (JsonWalk *) state;

	map_walk_object_end(w->walk);
	walk_stop_if_refused(w);
	JSON_ACTION_OK;
}

static JSON_ACTION_RETURN
walk_array_start(void *state)
{
	JsonWalk   *w = (JsonWalk *) state;

	if (map_walk_array_begin(w->walk))
		w->elem_start = w->lex->token_start;
	walk_stop_if_refused(w);
	JSON_ACTION_OK;
}

static JSON_ACTION_RETURN
walk_array_end(void *state)
{
	JsonWalk   *w = (JsonWalk *) state;

	map_walk_array_end(w->walk);
	walk_stop_if_refused(w);
	JSON_ACTION_OK;
}

static JSON_ACTION_RETURN
walk_field_start(void *state, char *fname, bool isnull)
{
	JsonWalk   *w = (JsonWalk *) state;

	if (map_walk_key(w->walk, fname))
		w->fields_start = w->lex->token_start;
	JSON_ACTION_OK;
}

static JSON_ACTION_RETURN
walk_field_end(void *state, char *fname, bool isnull)
{
	JsonWalk   *w = (JsonWalk *) state;

	if (!map_walk_keeps_keys(w->walk))
	{
		pfree(fname);
		JSON_ACTION_OK;
	}
	if (w->fields_start != NULL && map_walk_at_fields(w->walk))
	{
		int			len = (int) (w->lex->prev_token_terminator - w->fields_start);

		map_walk_fields_text(w->walk, pnstrdup(w->fields_start, len), len);
		w->fields_start = NULL;
	}
	JSON_ACTION_OK;
}

static JSON_ACTION_RETURN
walk_scalar(void *state, char *token, JsonTokenType tokentype)
{
	JsonWalk   *w = (JsonWalk *) state;

	/* a scalar refuses only as an event that is no object: never kept */
	if (!map_walk_scalar(w->walk, leaf_type_of(tokentype), token,
						 (int) strlen(token)))
	{
		pfree(token);
		walk_stop_if_refused(w);
	}
	JSON_ACTION_OK;
}

/*
 * Our own wording of parser errors: json_errdetail() is not in the
 * frontend libpgcommon of PostgreSQL 15, and one text for both builds keeps
 * the fuzz harness and the server saying the same.
 */
static const char *
json_error_text(JsonParseErrorType error)
{
	switch (error)
	{
		case JSON_ESCAPING_INVALID:
			return "invalid escape sequence in a string";
		case JSON_ESCAPING_REQUIRED:
			return "a control character in a string must be escaped";
		case JSON_EXPECTED_ARRAY_FIRST:
			return "expected an array element or \"]\"";
		case JSON_EXPECTED_ARRAY_NEXT:
			return "expected \",\" or \"]\"";
		case JSON_EXPECTED_COLON:
			return "expected \":\"";
		case JSON_EXPECTED_END:
			return "expected the end of the input";
		case JSON_EXPECTED_JSON:
			return "expected a JSON value";
		case JSON_EXPECTED_MORE:
			return "the input ended unexpectedly";
		case JSON_EXPECTED_OBJECT_FIRST:
			return "expected a string or \"}\"";
		case JSON_EXPECTED_OBJECT_NEXT:
			return "expected \",\" or \"}\"";
		case JSON_EXPECTED_STRING:
			return "expected a string";
		case JSON_INVALID_TOKEN:
			return "invalid token";
		case JSON_UNICODE_CODE_POINT_ZERO:
			return "\\u0000 is not allowed in a string";
		case JSON_UNICODE_ESCAPE_FORMAT:
			return "\\u must be followed by four hexadecimal digits";
		case JSON_UNICODE_HIGH_ESCAPE:
			return "a unicode escape above 007F needs a UTF8 database";
		case JSON_UNICODE_HIGH_SURROGATE:
		case JSON_UNICODE_LOW_SURROGATE:
			return "invalid unicode surrogate pair";
		default:
			return "invalid input";
	}
}

/*
 * pg_parse_json, with any ereport from inside it (in the backend: a \u
 * escape the database encoding cannot hold, a stack check) turned into a
 * message instead of an error: the HTTP workers call us in their event
 * loop, where an ERROR must not escape.  Parsing holds no resources but
 * memory, so no subtransaction is needed.
 */
static JsonParseErrorType
parse_guarded(JsonLexContext *lex, JsonSemAction *sem, char **caught)
{
#ifndef FRONTEND
	MemoryContext cxt = CurrentMemoryContext;
	volatile JsonParseErrorType res = JSON_SUCCESS;

	*caught = NULL;
	PG_TRY();
	{
		res = pg_parse_json(lex, sem);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		*caught = pstrdup(edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return res;
#else
	*caught = NULL;
	return pg_parse_json(lex, sem);
#endif
}

/*
 * Walk one document; false (and the request marked bad) on invalid JSON.
 * line is the 1-based NDJSON line for messages, 0 for a whole body.
 */
static bool
walk_document(MapWalk *walk, const char *text, size_t len, bool allow_array,
			  int index, int line)
{
	MapState   *ms = walk->ms;
	JsonWalk	w;
	JsonSemAction sem;
	JsonParseErrorType res;
	char	   *caught = NULL;
	int			depth = json_nesting_depth(text, len, PG_INT32_MAX);

	/*
	 * The walker applies max_depth too, but pg_parse_json recurses per
	 * level: counted before parsing, a deep document never reaches it.
	 */
	if (depth > ms->opts->max_depth)
	{
		char	   *msg;

		if (line > 0)
			msg = psprintf("JSON nesting on line %d is deeper than %d levels",
						   line, ms->opts->max_depth);
		else
			msg = psprintf("JSON nesting is deeper than %d levels",
						   ms->opts->max_depth);
		map_bad_request(ms, msg);
		pfree(msg);
		return false;
	}

	memset(&w, 0, sizeof(w));
	w.walk = walk;
	w.lex = machpay_json_lexer(text, len);
	map_walk_document(walk, allow_array, index);
	ms->excerpt_fn = text_excerpt;
	ms->excerpt_arg = &w;

	memset(&sem, 0, sizeof(sem));
	sem.semstate = &w;
	sem.object_start = walk_object_start;
	sem.object_end = walk_object_end;
	sem.array_start = walk_array_start;
	sem.array_end = walk_array_end;
	sem.object_field_start = walk_field_start;
	sem.object_field_end = walk_field_end;
	sem.scalar = walk_scalar;

	res = parse_guarded(w.lex, &sem, &caught);
	ms->excerpt_fn = NULL;		/* w lives only as long as this call */
	/* refused by a cap while walking: the parser was stopped on purpose */
	if (ms->result->status != MAP_OK)
		return false;
	if (caught != NULL)
	{
		char	   *msg = psprintf("invalid JSON: %s", caught);

		map_bad_request(ms, msg);
		pfree(msg);
		return false;
	}
	if (res != JSON_SUCCESS)
	{
		const char *detail = json_error_text(res);
		const char *at = w.lex->token_start ? w.lex->token_start :
			w.lex->token_terminator;
		const char *line_start = w.lex->line_start ? w.lex->line_start : text;
		int			column;
		char	   *msg;

		/* at the end of the input the lexer leaves token_start NULL */
		if (at == NULL || at < line_start)
			at = line_start;
		column = (int) (at - line_start) + 1;

		if (line > 0)
			msg = psprintf("invalid JSON on line %d, column %d: %s",
						   line, column, detail);
		else
			msg = psprintf("invalid JSON at line %d, column %d: %s",
						   w.lex->line_number, column, detail);
		map_bad_request(ms, msg);
		pfree(msg);
		return false;
	}
	machpay_json_lexer_free(w.lex);
	return true;
}

static bool
is_blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

void
map_json_text(const char *body, size_t len, bool ndjson,
			  const MapOptions *opts, MapResult *result)
{
	MapState	ms;
	MapWalk		walk;

	map_state_init(&ms, opts, result);
	map_walk_init(&walk, &ms);

	if (len > (size_t) PG_INT32_MAX - 1)
	{
		map_bad_request(&ms, "the body is too large");
		return;
	}
	if (pg_encoding_verifymbstr(PG_UTF8, body, (int) len) != (int) len)
	{
		map_bad_request(&ms, "the body is not valid UTF-8 text");
		return;
	}

	if (!ndjson)
	{
		walk_document(&walk, body, len, true, 0, 0);
		return;
	}

	{
		size_t		pos = 0;
		int			line = 0;
		int			index = 0;

		while (pos < len)
		{
			const char *nl = memchr(body + pos, '\n', len - pos);
			size_t		end = nl ? (size_t) (nl - body) : len;

			line++;
			if (result->status != MAP_OK)
				return;
			if (!is_blank(body + pos, end - pos))
			{
				if (!walk_document(&walk, body + pos, end - pos, false, index, line))
					return;
				index++;
			}
			pos = end + 1;
		}
	}
}
