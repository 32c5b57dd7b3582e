/*-------------------------------------------------------------------------
 * json_depth.c
 *	  The deepest nesting of a JSON text's brackets, counted before it is
 *	  parsed (json_depth.h).
 *
 * PostgreSQL's JSON parser recurses once per level, with no stack check in
 * frontend code and an ERROR for running out of stack in the backend: the
 * mapper (request bodies) and the SSE relay (notification payloads) must
 * hold their depth limits before the parser ever sees the text.  Brackets
 * inside strings do not count.  Plain C: the fuzzer links it with the
 * mapper core.
 *-------------------------------------------------------------------------
 */
#ifdef FRONTEND
#include "postgres_fe.h"
#else
#include "postgres.h"
#endif

#include "common/json_depth.h"

/*
 * The deepest nesting of text, or the first depth above stop_above once
 * the count passes it (the rest of the text is then not read).
 */
int
json_nesting_depth(const char *text, size_t len, int stop_above)
{
	int			depth = 0;
	int			max = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = text[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
		{
			if (++depth > max)
				max = depth;
			if (max > stop_above)
				return max;
		}
		else if ((c == '}' || c == ']') && depth > 0)
			depth--;
	}
	return max;
}
