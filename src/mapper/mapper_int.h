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

#endif							/* MACHPAY_MAPPER_INT_H */
