/*-------------------------------------------------------------------------
 * mapper_jsonb.c
 *	  The jsonb front end of the event mapper, for machpay.ingest(jsonb):
 *	  walks the value with JsonbIterator and hands each event's leaves to
 *	  the same core as the request-text front end (mapper.c).
 *
 * The payload is one event object or an array of them; a top-level value
 * that is not an object is one event with an invalid_type error; nesting
 * deeper than max_depth makes the whole request bad.  A reject's excerpt is
 * the event rendered by JsonbToCString, cut to 1 kB.  Backend only.
 *
 * jsonb has already normalised numbers (1e2 is stored as 100); the request
 * text front end reads numbers the same way (mapper.c, parse_u64), so both
 * accept the same integers.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

#include "mapper/mapper.h"
#include "mapper/mapper_int.h"

typedef struct JsonbWalk
{
	MapState   *ms;
	JsonbContainer *event;		/* the event being walked */
	const char **path;
	int			maxpath;
} JsonbWalk;

static char *
jsonb_excerpt(void *arg, int *len)
{
	JsonbWalk  *w = (JsonbWalk *) arg;
	char	   *text = JsonbToCString(NULL, w->event, 1024);

	*len = (int) strlen(text);
	return text;
}

/* A scalar as text, for leaves and excerpts. */
static MapLeafType
scalar_leaf(JsonbValue *v, const char **val, int *len)
{
	switch (v->type)
	{
		case jbvString:
			*val = pnstrdup(v->val.string.val, v->val.string.len);
			*len = v->val.string.len;
			return LEAF_STRING;
		case jbvNumeric:
			*val = DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
			*len = (int) strlen(*val);
			return LEAF_NUMBER;
		case jbvBool:
			*val = v->val.boolean ? "true" : "false";
			*len = (int) strlen(*val);
			return v->val.boolean ? LEAF_TRUE : LEAF_FALSE;
		default:
			*val = "null";
			*len = 4;
			return LEAF_NULL;
	}
}

/*
 * Walk one event object; false when it nests too deep (the request is
 * then bad).  base_depth is the nesting around the event (1 inside an array).
 */
static bool
walk_event(JsonbWalk *w, JsonbContainer *event, int index, int base_depth)
{
	MapState   *ms = w->ms;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = base_depth;
	int			obj_level = 0;
	int			arrays_open = 0;

	w->event = event;
	map_event_begin(ms);
	it = JsonbIteratorInit(event);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
			case WJB_BEGIN_ARRAY:
				if (++depth > ms->opts->max_depth)
				{
					char	   *msg = psprintf("JSON nesting is deeper than %d levels",
											   ms->opts->max_depth);

					map_bad_request(ms, msg);
					return false;
				}
				if (tok == WJB_BEGIN_ARRAY)
				{
					if (arrays_open == 0 && obj_level >= 1 && obj_level <= 2)
						map_add_leaf(ms, w->path, obj_level, LEAF_ARRAY, NULL, 0);
					arrays_open++;
					break;
				}
				if (arrays_open > 0)
					break;
				if (obj_level >= 1 && obj_level <= 2)
					map_add_leaf(ms, w->path, obj_level, LEAF_OBJECT, NULL, 0);
				obj_level++;
				if (obj_level > w->maxpath)
				{
					w->maxpath *= 2;
					w->path = repalloc(w->path, sizeof(char *) * w->maxpath);
				}
				break;
			case WJB_END_OBJECT:
				depth--;
				if (arrays_open == 0)
					obj_level--;
				break;
			case WJB_END_ARRAY:
				depth--;
				arrays_open--;
				break;
			case WJB_KEY:
				if (arrays_open == 0)
					w->path[obj_level - 1] = pnstrdup(v.val.string.val,
													  v.val.string.len);
				break;
			case WJB_VALUE:
				if (arrays_open == 0)
				{
					const char *val;
					int			len;
					MapLeafType type = scalar_leaf(&v, &val, &len);

					map_add_leaf(ms, w->path, obj_level, type, val, len);
				}
				break;
			default:
				/* array elements are ignored */
				break;
		}
	}

	/* a log event's "fields" object travels as JSON text */
	{
		JsonbValue	key;
		JsonbValue *fields;

		key.type = jbvString;
		key.val.string.val = "fields";
		key.val.string.len = 6;
		fields = findJsonbValueFromContainer(event, JB_FOBJECT, &key);
		if (fields != NULL && fields->type == jbvBinary &&
			JsonContainerIsObject(fields->val.binary.data))
		{
			ms->fields_json = JsonbToCString(NULL, fields->val.binary.data,
											 fields->val.binary.len);
			ms->fields_len = (int) strlen(ms->fields_json);
		}
	}

	map_event_end(ms, index, NULL, 0);
	return true;
}

/* An element where an event should be but that is no object. */
static void
not_object(JsonbWalk *w, JsonbValue *v, int index)
{
	const char *text;
	int			len;

	if (v->type == jbvBinary)
		text = JsonbToCString(NULL, v->val.binary.data, 1024);
	else
		(void) scalar_leaf(v, &text, &len);
	map_event_not_object(w->ms, index, text, (int) strlen(text));
}

void
map_jsonb(Jsonb *payload, const MapOptions *opts, MapResult *result)
{
	MapState	ms;
	JsonbWalk	w;
	JsonbContainer *root = &payload->root;

	map_state_init(&ms, opts, result);
	memset(&w, 0, sizeof(w));
	w.ms = &ms;
	w.maxpath = 16;
	w.path = palloc(sizeof(char *) * w.maxpath);
	ms.excerpt_fn = jsonb_excerpt;
	ms.excerpt_arg = &w;

	if (JB_ROOT_IS_SCALAR(payload))
	{
		JsonbValue	v;

		if (JsonbExtractScalar(root, &v))
			not_object(&w, &v, 0);
		return;
	}
	if (JB_ROOT_IS_OBJECT(payload))
	{
		walk_event(&w, root, 0, 0);
		return;
	}

	/* an array of events */
	{
		JsonbIterator *it = JsonbIteratorInit(root);
		JsonbValue	v;
		JsonbIteratorToken tok;
		int			index = 0;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (result->status != MAP_OK)
				break;			/* refused by a cap: read no further */
			if (tok != WJB_ELEM)
				continue;
			if (v.type == jbvBinary &&
				JsonContainerIsObject(v.val.binary.data))
			{
				if (!walk_event(&w, v.val.binary.data, index, 1))
					return;
			}
			else
				not_object(&w, &v, index);
			index++;
		}
	}
}
