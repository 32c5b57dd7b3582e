/*-------------------------------------------------------------------------
 * mapper_int.h
 *	  Internals shared by the mapper core (mapper.c) and its front ends
 *	  (mapper_json.c for request text, mapper_jsonb.c for jsonb).
 *
 * A front end walks one *event* (a top-level JSON object) and reports its
 * *leaves*: every scalar not inside an array, with its key path, plus a
 * marker leaf for each object or array value at depth 1 or 2 (so the core
 * can tell "config" is an object, or "gateway_id" an array).  The core then
 * maps the leaves by the event's source into rows.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_MAPPER_INT_H
#define MACHPAY_MAPPER_INT_H

#include "mapper/mapper.h"

typedef enum MapLeafType
{
	LEAF_NUMBER,				/* val = the JSON number text */
	LEAF_STRING,				/* val = the unescaped string */
	LEAF_TRUE,
	LEAF_FALSE,
	LEAF_NULL,
	LEAF_OBJECT,				/* marker: an object value */
	LEAF_ARRAY,					/* marker: an array value */
} MapLeafType;

typedef struct MapLeaf
{
	const char **keys;			/* path components, keys[0] is top-level */
	int			nkeys;
	MapLeafType type;
	const char *val;
	int			vallen;
} MapLeaf;

/* Per-request state of the mapper core. */
typedef struct MapState
{
	const MapOptions *opts;
	MapResult  *result;

	/* the event being collected */
	MapLeaf    *leaves;
	int			nleaves;
	int			maxleaves;
	int			nvalues;		/* number/boolean leaves below depth 1 */
	bool		too_many;		/* more values than an event may yield */
	const char *fields_json;	/* log "fields" object as JSON text */
	int			fields_len;
	const char *fields_bad_number;	/* a number in it numeric cannot store */

	/*
	 * Where a reject's excerpt comes from when the front end passes none:
	 * rendering is deferred so accepted events never pay for it.
	 */
	char	   *(*excerpt_fn) (void *arg, int *len);
	void	   *excerpt_arg;

	StringInfoData scratch;		/* metric names, labels */
#ifndef FRONTEND
	/*
	 * An event's leaves and temporaries live in event_cxt, reset after each
	 * event, so a large request needs memory for its rows, not for all its
	 * parsed text; rows, errors and counts go to outer_cxt, the caller's.
	 */
	MemoryContext outer_cxt;
	MemoryContext event_cxt;
#endif
	int			maxerrors;		/* allocated entries of result->errors */
} MapState;

extern void map_state_init(MapState *st, const MapOptions *opts, MapResult *result);
extern void map_event_begin(MapState *st);
extern void map_add_leaf(MapState *st, const char *const *keys, int nkeys,
						 MapLeafType type, const char *val, int vallen);
extern void map_event_end(MapState *st, int index,
						  const char *excerpt, int excerpt_len);
extern void map_event_not_object(MapState *st, int index,
								 const char *excerpt, int excerpt_len);
extern void map_bad_request(MapState *st, const char *message);
extern bool map_number_storable(const char *num);

/*
 * The leaf walker: one document's tokens in, events and leaves out to the
 * core.  A front end calls map_walk_document() per document (a body, or
 * one NDJSON line), then one call per token in document order.  Strings
 * (keys, scalar text) must be NUL-terminated and live until the event ends
 * (the core's event context); the walker keeps pointers, not copies.
 */
typedef struct MapWalk
{
	MapState   *ms;
	bool		allow_top_array;	/* a top-level array holds events */
	int			event_depth;	/* nesting depth of event objects: 1 or 2 */
	int			depth;			/* containers open */
	int			index;			/* index of the current event */
	int			nelems;			/* elements of the top-level array so far */

	bool		in_event;
	int			obj_level;		/* objects open inside the event */
	int			arrays_open;	/* arrays open inside the event */
	bool		fields_key;		/* under the event's top-level "fields" */
	int			skip_depth;		/* > 0: inside a non-object where an event belongs */

	const char **path;			/* key of each open object level */
	int			maxpath;
} MapWalk;

extern void map_walk_init(MapWalk *w, MapState *ms);
extern void map_walk_document(MapWalk *w, bool allow_top_array, int index);

/*
 * The tokens.  The two begin calls return true when the container starts
 * a value where an event belongs (an event, or a non-object to reject):
 * its excerpt, if the event is rejected, comes from the front end's
 * excerpt_fn, called before the matching end call returns.  A scalar
 * where an event belongs is its own excerpt.  map_walk_scalar returns
 * true when it kept text (a leaf points to it), false when the caller may
 * free it.  map_walk_key returns true for the key of the event's top-level
 * "fields" (a log's fields travel as JSON text: map_walk_fields_text).
 */
extern bool map_walk_object_begin(MapWalk *w);
extern void map_walk_object_end(MapWalk *w);
extern bool map_walk_array_begin(MapWalk *w);
extern void map_walk_array_end(MapWalk *w);
extern bool map_walk_key(MapWalk *w, const char *key);
extern bool map_walk_scalar(MapWalk *w, MapLeafType type, const char *text,
							int len);

/* A log event's "fields" value as JSON text, from the front end. */
extern void map_walk_fields_text(MapWalk *w, const char *json, int len);

/* The request was refused: the front end may stop feeding tokens. */
static inline bool
map_walk_stopped(const MapWalk *w)
{
	return w->ms->result->status != MAP_OK;
}

/* Whether a key here would be kept (else the caller may skip or free it). */
static inline bool
map_walk_keeps_keys(const MapWalk *w)
{
	return w->in_event && w->arrays_open == 0 && w->skip_depth == 0;
}

/* Whether a scalar here matters (else the caller need not render it). */
static inline bool
map_walk_wants_scalar(const MapWalk *w)
{
	return w->skip_depth == 0 &&
		(!w->in_event || w->arrays_open == 0 || w->fields_key);
}

/* At the key of the event's top-level "fields", or at the end of its value. */
static inline bool
map_walk_at_fields(const MapWalk *w)
{
	return map_walk_keeps_keys(w) && w->obj_level == 1 && w->fields_key;
}

#endif							/* MACHPAY_MAPPER_INT_H */
