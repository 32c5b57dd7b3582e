/*-------------------------------------------------------------------------
 * mapper_walk.c
 *	  The leaf walker: the one place that turns a JSON document's tokens
 *	  into events and leaves for the mapper core (mapper.c).
 *
 * Both front ends (mapper_json.c for request text, mapper_jsonb.c for
 * jsonb) feed it the same small token stream: object begin / key / end,
 * array begin / end, and scalars with their type and text.  The walker
 * holds the rules that depend only on the shape of the document: which
 * values are events (the document, or each element of a top-level array
 * where one is allowed) and which are no object (an invalid_type error),
 * the nesting limit (max_depth; a bad request), the key path of each leaf,
 * the marker leaves of objects and arrays at depth 1 and 2, values inside
 * arrays being no leaves, and a log's "fields" numbers having to fit
 * numeric.  Excerpts of containers come from the front end's excerpt_fn
 * (MapState), which knows how its document is written.
 * Compiles in the backend and with -DFRONTEND (the fuzz harness).
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include "mapper/mapper.h"
#include "mapper/mapper_int.h"

void
map_walk_init(MapWalk *w, MapState *ms)
{
	memset(w, 0, sizeof(*w));
	w->ms = ms;
	w->maxpath = 16;
	w->path = palloc(sizeof(char *) * w->maxpath);
}

void
map_walk_document(MapWalk *w, bool allow_top_array, int index)
{
	w->allow_top_array = allow_top_array;
	w->event_depth = 1;
	w->depth = 0;
	w->index = index;
	w->nelems = 0;
	w->in_event = false;
	w->obj_level = 0;
	w->arrays_open = 0;
	w->fields_key = false;
	w->skip_depth = 0;
}

/* A value where an event belongs starts: the next index in an array. */
static void
element_begin(MapWalk *w)
{
	if (w->event_depth == 2)
		w->index = w->nelems++;
}

/* One more container open; false (and the request bad) past max_depth. */
static bool
nest(MapWalk *w)
{
	char	   *msg;

	if (++w->depth <= w->ms->opts->max_depth)
		return true;
	msg = psprintf("JSON nesting is deeper than %d levels",
				   w->ms->opts->max_depth);
	map_bad_request(w->ms, msg);
	pfree(msg);
	return false;
}

bool
map_walk_object_begin(MapWalk *w)
{
	if (map_walk_stopped(w) || !nest(w) || w->skip_depth > 0)
		return false;
	if (!w->in_event)
	{
		element_begin(w);
		w->in_event = true;
		w->obj_level = 1;
		w->arrays_open = 0;
		w->fields_key = false;
		map_event_begin(w->ms);
		return true;
	}
	if (w->arrays_open > 0)
		return false;
	if (w->obj_level <= 2)
		map_add_leaf(w->ms, w->path, w->obj_level, LEAF_OBJECT, NULL, 0);
	w->obj_level++;
	if (w->obj_level > w->maxpath)
	{
		w->maxpath *= 2;
		w->path = repalloc(w->path, sizeof(char *) * w->maxpath);
	}
	return false;
}

/*
 * Inside a value where an event belongs that is no object: true while
 * skipping it; at its end it is reported as one invalid event.
 */
static bool
skipped_end(MapWalk *w, int closing)
{
	if (w->skip_depth == 0)
		return false;
	if (closing == w->skip_depth)
	{
		w->skip_depth = 0;
		map_event_not_object(w->ms, w->index, NULL, 0);
	}
	return true;
}

void
map_walk_object_end(MapWalk *w)
{
	int			closing = w->depth--;

	if (map_walk_stopped(w) || skipped_end(w, closing))
		return;
	if (!w->in_event || w->arrays_open > 0)
		return;
	if (--w->obj_level == 0)
	{
		w->in_event = false;
		w->fields_key = false;
		map_event_end(w->ms, w->index, NULL, 0);
	}
}

bool
map_walk_array_begin(MapWalk *w)
{
	if (map_walk_stopped(w) || !nest(w) || w->skip_depth > 0)
		return false;
	if (!w->in_event)
	{
		if (w->depth == 1 && w->allow_top_array)
		{
			w->event_depth = 2;
			return false;
		}
		/* an array where an event object belongs */
		element_begin(w);
		w->skip_depth = w->depth;
		return true;
	}
	if (w->arrays_open == 0 && w->obj_level <= 2)
		map_add_leaf(w->ms, w->path, w->obj_level, LEAF_ARRAY, NULL, 0);
	w->arrays_open++;
	return false;
}

void
map_walk_array_end(MapWalk *w)
{
	int			closing = w->depth--;

	if (map_walk_stopped(w) || skipped_end(w, closing))
		return;
	if (w->in_event)
		w->arrays_open--;
}

bool
map_walk_key(MapWalk *w, const char *key)
{
	if (!map_walk_keeps_keys(w))
		return false;
	w->path[w->obj_level - 1] = key;
	if (w->obj_level > 1)
		return false;
	w->fields_key = strcmp(key, "fields") == 0;
	/* jsonb keeps the last of duplicate keys: judge only that one */
	if (w->fields_key)
		w->ms->fields_bad_number = NULL;
	return w->fields_key;
}

/*
 * Once the request is refused the core ignores what follows (and the front
 * ends stop feeding), so the one token of every leaf is spared that check.
 */
bool
map_walk_scalar(MapWalk *w, MapLeafType type, const char *text, int len)
{
	if (w->skip_depth > 0)
		return false;
	if (!w->in_event)
	{
		element_begin(w);
		map_event_not_object(w->ms, w->index, text, len);
		return false;
	}
	/* the log's fields become jsonb: its numbers must fit numeric */
	if (w->fields_key && type == LEAF_NUMBER &&
		w->ms->fields_bad_number == NULL && !map_number_storable(text))
		w->ms->fields_bad_number = pstrdup(text);
	if (w->arrays_open > 0)
		return false;
	map_add_leaf(w->ms, w->path, w->obj_level, type, text, len);
	return true;
}

void
map_walk_fields_text(MapWalk *w, const char *json, int len)
{
	w->ms->fields_json = json;
	w->ms->fields_len = len;
}
