/*-------------------------------------------------------------------------
 * mapper_jsonb.c
 *	  The jsonb front end of the event mapper, for machpay.ingest(jsonb):
 *	  walks the value with JsonbIterator and feeds its tokens to the same
 *	  leaf walker as the request-text front end (mapper_walk.c).
 *
 * The payload is one event object or an array of them, under the walker's
 * rules (a value that is no object is an invalid_type error, nesting deeper
 * than max_depth a bad request).  A reject's excerpt is the value rendered
 * by JsonbToCString, cut to 1 kB.  Backend only.
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
	MapWalk    *walk;
	JsonbContainer *value;		/* the value where an event belongs being fed */
} JsonbWalk;

/* A rejected event's excerpt: the value rendered by jsonb, cut to 1 kB. */
static char *
jsonb_excerpt(void *arg, int *len)
{
	JsonbWalk  *w = (JsonbWalk *) arg;
	char	   *text = JsonbToCString(NULL, w->value, 1024);

	*len = (int) strlen(text);
	return text;
}

/* A scalar's type and text. */
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

static void
feed_scalar(JsonbWalk *w, JsonbValue *v)
{
	const char *text;
	int			len;
	MapLeafType type;

	if (!map_walk_wants_scalar(w->walk))
		return;
	type = scalar_leaf(v, &text, &len);
	(void) map_walk_scalar(w->walk, type, text, len);
}

/*
 * An event begins: a log event's "fields" travels as JSON text, rendered
 * here from the object jsonb keeps (the last of duplicate keys).
 */
static void
event_fields(JsonbWalk *w)
{
	JsonbValue	key;
	JsonbValue *fields;

	key.type = jbvString;
	key.val.string.val = "fields";
	key.val.string.len = 6;
	fields = findJsonbValueFromContainer(w->value, JB_FOBJECT, &key);
	if (fields != NULL && fields->type == jbvBinary &&
		JsonContainerIsObject(fields->val.binary.data))
	{
		char	   *json = JsonbToCString(NULL, fields->val.binary.data,
										  fields->val.binary.len);

		map_walk_fields_text(w->walk, json, (int) strlen(json));
	}
}

/* Every token of a container where an event belongs, in document order. */
static void
feed_value(JsonbWalk *w, JsonbContainer *value)
{
	JsonbIterator *it = JsonbIteratorInit(value);
	JsonbValue	v;
	JsonbIteratorToken tok;

	w->value = value;
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
				if (map_walk_object_begin(w->walk))
					event_fields(w);
				break;
			case WJB_END_OBJECT:
				map_walk_object_end(w->walk);
				break;
			case WJB_BEGIN_ARRAY:
				(void) map_walk_array_begin(w->walk);
				break;
			case WJB_END_ARRAY:
				map_walk_array_end(w->walk);
				break;
			case WJB_KEY:
				if (map_walk_keeps_keys(w->walk))
					(void) map_walk_key(w->walk, pnstrdup(v.val.string.val,
														  v.val.string.len));
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				feed_scalar(w, &v);
				break;
			default:
				break;
		}
		if (map_walk_stopped(w->walk))
			return;
	}
}

void
map_jsonb(Jsonb *payload, const MapOptions *opts, MapResult *result)
{
	MapState	ms;
	MapWalk		walk;
	JsonbWalk	w;
	JsonbContainer *root = &payload->root;

	map_state_init(&ms, opts, result);
	map_walk_init(&walk, &ms);
	map_walk_document(&walk, true, 0);
	memset(&w, 0, sizeof(w));
	w.walk = &walk;
	ms.excerpt_fn = jsonb_excerpt;
	ms.excerpt_arg = &w;

	if (JB_ROOT_IS_SCALAR(payload))
	{
		JsonbValue	v;

		if (JsonbExtractScalar(root, &v))
			feed_scalar(&w, &v);
		return;
	}
	if (JB_ROOT_IS_OBJECT(payload))
	{
		feed_value(&w, root);
		return;
	}

	/* an array: each element is fed on its own, for its excerpt */
	{
		JsonbIterator *it = JsonbIteratorInit(root);
		JsonbValue	v;
		JsonbIteratorToken tok;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_BEGIN_ARRAY)
				(void) map_walk_array_begin(&walk);
			else if (tok == WJB_END_ARRAY)
				map_walk_array_end(&walk);
			else if (tok == WJB_ELEM && v.type == jbvBinary)
				feed_value(&w, v.val.binary.data);
			else if (tok == WJB_ELEM)
				feed_scalar(&w, &v);
			if (map_walk_stopped(&walk))
				break;			/* refused: read no further */
		}
	}
}
