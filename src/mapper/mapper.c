/*-------------------------------------------------------------------------
 * mapper.c
 *	  The event mapper core: the leaves of one event in, rows or one
 *	  per-event error out (SPEC §4).
 *
 * An *event* is one top-level JSON object; its *leaves* (mapper_int.h) are
 * collected by a front end and mapped here by the event's `source`:
 * telemetry (gateway, sdk) becomes metric rows named by dotted path, a
 * gateway's `config` a vendor-profile row, payment_intent an intent row,
 * log a log row.  An invalid event is rejected whole: its rows are taken
 * back and it leaves at most one dead-letter (reject) row.
 *
 * Labels are written exactly as jsonb prints them (keys shorter first, then
 * bytewise; ", " and ": " separators), so one label set always has one text
 * and it equals labels::text of the stored value: the writer dedupes series
 * by that text.
 *-------------------------------------------------------------------------
 */
#ifndef FRONTEND
#include "postgres.h"
#else
#include "postgres_fe.h"
#endif

#include <math.h>

#ifndef FRONTEND
#include "utils/memutils.h"
#endif

#include "common/base58.h"
#include "mapper/mapper.h"
#include "mapper/mapper_int.h"

#define EXCERPT_MAX_BYTES		1024
#define UNIX_EPOCH_IN_PG_SECS	((double) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)
/* Leaves an event may have beyond its row limit (envelope, config, ...). */
#define EXTRA_LEAVES			1024
/*
 * Longest metric name: names are keys of a btree (entity, name, labels)
 * whose entries must stay far below the 2.7 kB a btree page allows.
 */
#define MAX_METRIC_NAME_BYTES	1024
/* jsonb's own limit on a value's size (JENTRY_OFFLENMASK). */
#define MAX_FIELDS_BYTES		0x0FFFFFFF

#ifndef FRONTEND
#define SWITCH_TO_OUTER(st)		MemoryContextSwitchTo((st)->outer_cxt)
#define SWITCH_BACK(old)		MemoryContextSwitchTo(old)
typedef MemoryContext SavedContext;
#else
#define SWITCH_TO_OUTER(st)		NULL
#define SWITCH_BACK(old)		((void) (old))
typedef void *SavedContext;
#endif

static const char *const error_code_names[] = {
	[MAP_ERR_UNKNOWN_SOURCE] = "unknown_source",
	[MAP_ERR_INVALID_ENTITY_ID] = "invalid_entity_id",
	[MAP_ERR_MISSING_FIELD] = "missing_field",
	[MAP_ERR_INVALID_TYPE] = "invalid_type",
	[MAP_ERR_TIME_OUT_OF_RANGE] = "time_out_of_range",
	[MAP_ERR_INVALID_AMOUNT] = "invalid_amount",
	[MAP_ERR_TOO_LARGE] = "too_large",
	[MAP_ERR_ENTITY_NOT_ALLOWED] = "entity_not_allowed",
};

/* The outcome of mapping one event: ok, or an error code and message. */
typedef struct EventError
{
	bool		failed;
	MapErrorCode code;
	char	   *message;
} EventError;

/* Rows of the current event, counted so an accepted event can add them. */
typedef struct EventRows
{
	int64		nrows[ROW_KIND_MAX + 1];
} EventRows;

const char *
map_error_code_name(MapErrorCode code)
{
	if ((int) code < 0 || code > MAP_ERR_ENTITY_NOT_ALLOWED)
		return "unknown";
	return error_code_names[code];
}

void
map_options_init(MapOptions *opts, TimestampTz now)
{
	memset(opts, 0, sizeof(*opts));
	opts->now = now;
	opts->max_clock_skew_us = INT64CONST(300) * USECS_PER_SEC;
	opts->metrics_retention_us = INT64CONST(14) * USECS_PER_DAY;
	opts->logs_retention_us = INT64CONST(3) * USECS_PER_DAY;
	opts->bound_entity = NULL;
	opts->remote_addr = NULL;
	opts->max_depth = 64;
	opts->max_rows_per_event = 10000;
	opts->max_label_bytes = 256;
	opts->max_errors_listed = 100;
	opts->record_rejects = true;
	opts->max_events = 10000;
	opts->max_rows = 100000;
	opts->max_rejects = 1000;
	opts->max_rows_per_body_byte = 32;
	opts->body_bytes = 0;
}

/* ------------------------------------------------------------------------
 * Collecting leaves
 * ------------------------------------------------------------------------
 */

void
map_state_init(MapState *st, const MapOptions *opts, MapResult *result)
{
	memset(st, 0, sizeof(*st));
	st->opts = opts;
	st->result = result;
	st->maxleaves = 64;
	st->leaves = palloc(sizeof(MapLeaf) * st->maxleaves);
	initStringInfo(&st->scratch);

	memset(result, 0, sizeof(*result));
	result->status = MAP_OK;
	initStringInfo(&result->rows);
#ifndef FRONTEND
	st->outer_cxt = CurrentMemoryContext;
	st->event_cxt = AllocSetContextCreate(CurrentMemoryContext,
										  "machpay mapper event",
										  ALLOCSET_DEFAULT_SIZES);
#endif
}

void
map_event_begin(MapState *st)
{
#ifndef FRONTEND
	MemoryContextSwitchTo(st->event_cxt);
#endif
	st->nleaves = 0;
	st->nvalues = 0;
	st->too_many = false;
	st->fields_json = NULL;
	st->fields_len = 0;
	st->fields_bad_number = NULL;
}

void
map_add_leaf(MapState *st, const char *const *keys, int nkeys,
			 MapLeafType type, const char *val, int vallen)
{
	MapLeaf    *leaf;
	const char **copy;

	/*
	 * Only numbers and booleans below the top level can become rows; other
	 * deep leaves matter only under config (depth 2), so skip them to keep
	 * an event's memory proportional to what it can yield.  Top-level
	 * leaves are always kept: jsonb orders keys by length, so "source" may
	 * come after a section that is far too large.
	 */
	if (nkeys > 1)
	{
		if (type == LEAF_NUMBER || type == LEAF_TRUE || type == LEAF_FALSE)
		{
			if (st->too_many ||
				++st->nvalues > st->opts->max_rows_per_event + EXTRA_LEAVES)
			{
				st->too_many = true;
				return;
			}
		}
		else if (nkeys > 2)
			return;
		else if (st->nleaves > st->opts->max_rows_per_event + 2 * EXTRA_LEAVES)
		{
			st->too_many = true;
			return;
		}
	}

	if (st->nleaves >= st->maxleaves)
	{
		st->maxleaves *= 2;
		st->leaves = repalloc(st->leaves, sizeof(MapLeaf) * st->maxleaves);
	}
	copy = palloc(sizeof(char *) * Max(nkeys, 1));
	memcpy(copy, keys, sizeof(char *) * nkeys);
	leaf = &st->leaves[st->nleaves++];
	leaf->keys = copy;
	leaf->nkeys = nkeys;
	leaf->type = type;
	leaf->val = val;
	leaf->vallen = vallen;
}

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------
 */

/* Cut s to at most max bytes without splitting a UTF-8 character. */
static int
excerpt_length(const char *s, int len, int max)
{
	if (len <= max)
		return len;
	len = max;
	while (len > 0 && ((unsigned char) s[len] & 0xC0) == 0x80)
		len--;
	return len;
}

/* At most max bytes of s, for messages, cut at a character boundary. */
static const char *
clip(const char *s, int max)
{
	int			len = (int) strlen(s);

	if (len <= max)
		return s;
	return pnstrdup(s, excerpt_length(s, len, max));
}

static void
set_error(EventError *err, MapErrorCode code, const char *fmt,...)
pg_attribute_printf(3, 4);

static void
set_error(EventError *err, MapErrorCode code, const char *fmt,...)
{
	va_list		args;
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	err->failed = true;
	err->code = code;
	err->message = buf.data;
}

/* The last top-level leaf named key (jsonb keeps the last duplicate too). */
static const MapLeaf *
top_leaf(MapState *st, const char *key)
{
	for (int i = st->nleaves - 1; i >= 0; i--)
	{
		const MapLeaf *leaf = &st->leaves[i];

		if (leaf->nkeys == 1 && strcmp(leaf->keys[0], key) == 0)
			return leaf;
	}
	return NULL;
}

/* The last leaf section.key (depth 2). */
static const MapLeaf *
sub_leaf(MapState *st, const char *section, const char *key)
{
	for (int i = st->nleaves - 1; i >= 0; i--)
	{
		const MapLeaf *leaf = &st->leaves[i];

		if (leaf->nkeys == 2 && strcmp(leaf->keys[0], section) == 0 &&
			strcmp(leaf->keys[1], key) == 0)
			return leaf;
	}
	return NULL;
}

static const char *
leaf_type_name(MapLeafType type)
{
	switch (type)
	{
		case LEAF_NUMBER:
			return "a number";
		case LEAF_STRING:
			return "a string";
		case LEAF_TRUE:
		case LEAF_FALSE:
			return "a boolean";
		case LEAF_NULL:
			return "null";
		case LEAF_OBJECT:
			return "an object";
		case LEAF_ARRAY:
			return "an array";
	}
	return "a value";
}

/* A required string field; null counts as missing. */
static const MapLeaf *
require_string(MapState *st, const char *key, EventError *err)
{
	const MapLeaf *leaf = top_leaf(st, key);

	if (leaf == NULL || leaf->type == LEAF_NULL)
	{
		set_error(err, MAP_ERR_MISSING_FIELD, "missing field \"%s\"", key);
		return NULL;
	}
	if (leaf->type != LEAF_STRING)
	{
		set_error(err, MAP_ERR_INVALID_TYPE, "field \"%s\" must be a string, not %s",
				  key, leaf_type_name(leaf->type));
		return NULL;
	}
	return leaf;
}

/* A required base58 id of nbytes bytes. */
static const char *
require_id(MapState *st, const char *key, int nbytes, EventError *err)
{
	const MapLeaf *leaf = require_string(st, key, err);

	if (leaf == NULL)
		return NULL;
	if (!base58_decode_exact(leaf->val, leaf->vallen, NULL, nbytes))
	{
		set_error(err, MAP_ERR_INVALID_ENTITY_ID,
				  "field \"%s\" is not base58 text of %d bytes", key, nbytes);
		return NULL;
	}
	return leaf->val;
}

static bool
check_entity_allowed(MapState *st, const char *key, const char *entity,
					 EventError *err)
{
	const char *bound = st->opts->bound_entity;

	if (bound == NULL || strcmp(bound, "*") == 0 || strcmp(bound, entity) == 0)
		return true;
	set_error(err, MAP_ERR_ENTITY_NOT_ALLOWED,
			  "the key is bound to another entity than %s \"%s\"", key, entity);
	return false;
}

static bool
parse_double(const char *text, double *out)
{
	char	   *end;

	errno = 0;
	*out = strtod(text, &end);
	return end != text && *end == '\0' && isfinite(*out);
}

/*
 * Can numeric_in store this JSON number?  jsonb keeps numbers as numeric,
 * whose input refuses (PostgreSQL 15 and later alike) an exponent of
 * INT_MAX/2 or more in magnitude, a display scale (digits after the point
 * less the exponent) above NUMERIC_DSCALE_MAX, and a first non-zero digit
 * at decimal position 4 * (NUMERIC_WEIGHT_MAX + 1) or beyond (weights
 * count base-10000 digits).  The number is valid JSON number text.
 */
#define NUMERIC_TEXT_DSCALE_MAX		16383
#define NUMERIC_TEXT_WEIGHT_LIMIT	(4 * (PG_INT16_MAX + 1))

bool
map_number_storable(const char *num)
{
	const char *p = num;
	int64		int_digits = 0;
	int64		frac_digits = 0;
	int64		first_nonzero = -1; /* index among all digits */
	int64		exponent = 0;
	int64		dscale;

	if (*p == '-')
		p++;
	for (; *p >= '0' && *p <= '9'; p++, int_digits++)
		if (*p != '0' && first_nonzero < 0)
			first_nonzero = int_digits;
	if (*p == '.')
	{
		for (p++; *p >= '0' && *p <= '9'; p++, frac_digits++)
			if (*p != '0' && first_nonzero < 0)
				first_nonzero = int_digits + frac_digits;
	}
	if (*p == 'e' || *p == 'E')
	{
		bool		negative = false;

		p++;
		if (*p == '+' || *p == '-')
			negative = (*p++ == '-');
		/* saturate: anything past INT_MAX/2 is refused alike */
		for (; *p >= '0' && *p <= '9'; p++)
			if (exponent < PG_INT32_MAX)
				exponent = exponent * 10 + (*p - '0');
		if (negative)
			exponent = -exponent;
	}
	if (exponent >= PG_INT32_MAX / 2 || exponent <= -(PG_INT32_MAX / 2))
		return false;
	dscale = Max(frac_digits - exponent, 0);
	if (dscale > NUMERIC_TEXT_DSCALE_MAX)
		return false;
	if (first_nonzero >= 0 &&
		int_digits - 1 - first_nonzero + exponent >= NUMERIC_TEXT_WEIGHT_LIMIT)
		return false;
	return true;
}

/*
 * A required time in unix seconds (may be fractional), checked against
 * now + max_clock_skew and now - retention; min_time, when given, is a
 * lower bound that makes the time out of range (period_start).
 */
static bool
require_time(MapState *st, const char *key, int64 retention_us,
			 TimestampTz *out, double *secs_out, EventError *err)
{
	const MapLeaf *leaf = top_leaf(st, key);
	double		secs;
	double		now_secs;

	if (leaf == NULL || leaf->type == LEAF_NULL)
	{
		set_error(err, MAP_ERR_MISSING_FIELD, "missing field \"%s\"", key);
		return false;
	}
	if (leaf->type != LEAF_NUMBER)
	{
		set_error(err, MAP_ERR_INVALID_TYPE,
				  "field \"%s\" must be a number of unix seconds, not %s",
				  key, leaf_type_name(leaf->type));
		return false;
	}
	errno = 0;
	secs = strtod(leaf->val, NULL);
	now_secs = (double) st->opts->now / USECS_PER_SEC + UNIX_EPOCH_IN_PG_SECS;
	if (!(secs <= now_secs + (double) st->opts->max_clock_skew_us / USECS_PER_SEC))
	{
		set_error(err, MAP_ERR_TIME_OUT_OF_RANGE,
				  "field \"%s\" is more than the allowed clock skew ahead of the receiver's time", key);
		return false;
	}
	if (!(secs >= now_secs - (double) retention_us / USECS_PER_SEC))
	{
		set_error(err, MAP_ERR_TIME_OUT_OF_RANGE,
				  "field \"%s\" is older than the retention of its table", key);
		return false;
	}
	*out = (TimestampTz) llround((secs - UNIX_EPOCH_IN_PG_SECS) * USECS_PER_SEC);
	if (secs_out)
		*secs_out = secs;
	return true;
}

#define U64_MAX_DIGITS 20

/* Digits p[0..len) as a u64's canonical text into out; false on overflow. */
static bool
u64_from_digits(const char *p, int len, char *out)
{
	static const char max_u64[] = "18446744073709551615";

	while (len > 1 && *p == '0')
	{
		p++;
		len--;
	}
	if (len > U64_MAX_DIGITS || (len == U64_MAX_DIGITS && memcmp(p, max_u64, U64_MAX_DIGITS) > 0))
		return false;
	memcpy(out, p, len);
	out[len] = '\0';
	return true;
}

/*
 * A JSON number whose value is an integer written without a fractional
 * digit that survives its exponent: the numbers numeric_in (and so jsonb)
 * stores with scale 0.  That is how the jsonb front end sees them (1e3 is
 * stored as 1000, -0 as 0, 1.0 keeps its scale), so both front ends, HTTP
 * and machpay.ingest(), accept exactly the same numbers.
 */
static bool
u64_from_json_number(const char *p, int len, char *out)
{
	char		digits[U64_MAX_DIGITS + 1];
	int			ndigits = 0;
	int			nfrac = 0;
	int			exp = 0;
	bool		negative = false;
	bool		nonzero = false;
	int			i = 0;

	if (i < len && p[i] == '-')
	{
		negative = true;
		i++;
	}
	/* Mantissa digits, without leading zeros, and how many are fractional. */
	for (bool frac = false; i < len; i++)
	{
		if (p[i] == '.' && !frac)
		{
			frac = true;
			continue;
		}
		if (p[i] < '0' || p[i] > '9')
			break;
		if (frac)
			nfrac++;
		if (p[i] != '0')
			nonzero = true;
		if (!nonzero)
			continue;
		if (ndigits > U64_MAX_DIGITS)
			return false;		/* 21 significant digits: over 2^64 */
		digits[ndigits++] = p[i];
	}
	if (i < len && (p[i] == 'e' || p[i] == 'E'))
	{
		bool		expneg = false;

		i++;
		if (i < len && (p[i] == '+' || p[i] == '-'))
			expneg = (p[i++] == '-');
		for (; i < len && p[i] >= '0' && p[i] <= '9'; i++)
			if (exp < 1000)
				exp = exp * 10 + (p[i] - '0');
		if (expneg)
			exp = -exp;
	}
	if (i != len || nfrac - exp > 0)
		return false;			/* a fractional digit is left: a scale */
	if (!nonzero)
	{
		strcpy(out, "0");		/* -0 and 0e5 are 0, as in numeric */
		return true;
	}
	if (negative)
		return false;
	/* Value = digits * 10^(exp - nfrac): append that many zeros. */
	for (int z = exp - nfrac; z > 0; z--)
	{
		if (ndigits > U64_MAX_DIGITS)
			return false;
		digits[ndigits++] = '0';
	}
	return u64_from_digits(digits, ndigits, out);
}

/*
 * An unsigned 64-bit integer given as a JSON number (see
 * u64_from_json_number) or a decimal string of digits only, exactly: no
 * sign, fraction or overflow.  out gets the canonical decimal text (no
 * leading zeros), at least 21 bytes.
 */
static bool
parse_u64(const MapLeaf *leaf, char *out)
{
	const char *p = leaf->val;
	int			len = leaf->vallen;

	if (len == 0)
		return false;
	if (leaf->type == LEAF_NUMBER)
		return u64_from_json_number(p, len, out);
	if (leaf->type != LEAF_STRING)
		return false;
	for (int i = 0; i < len; i++)
		if (p[i] < '0' || p[i] > '9')
			return false;
	return u64_from_digits(p, len, out);
}

static void
append_json_string(StringInfo buf, const char *s, int len)
{
	appendStringInfoChar(buf, '"');
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		switch (c)
		{
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			default:
				if (c < ' ')
					appendStringInfo(buf, "\\u%04x", (int) c);
				else
					appendStringInfoChar(buf, (char) c);
		}
	}
	appendStringInfoChar(buf, '"');
}

/* ------------------------------------------------------------------------
 * Rows
 * ------------------------------------------------------------------------
 */

typedef struct Label
{
	const char *key;
	const char *val;
	int			vallen;
} Label;

/* jsonb's key order: shorter keys first, then bytewise. */
static int
label_cmp(const Label *a, const Label *b)
{
	size_t		la = strlen(a->key);
	size_t		lb = strlen(b->key);

	if (la != lb)
		return la < lb ? -1 : 1;
	return strcmp(a->key, b->key);
}

static void
emit_metric(MapState *st, EventRows *ev, int index, const char *entity,
			const char *name, int namelen, Label *labels, int nlabels,
			double value, TimestampTz time, EventSource source)
{
	MetricRow	fixed;
	const char *strs[3];
	uint32		lens[3];
	StringInfoData lab;

	/* at most two labels: sort them by hand */
	if (nlabels == 2 && label_cmp(&labels[0], &labels[1]) > 0)
	{
		Label		tmp = labels[0];

		labels[0] = labels[1];
		labels[1] = tmp;
	}
	initStringInfo(&lab);
	appendStringInfoChar(&lab, '{');
	for (int i = 0; i < nlabels; i++)
	{
		if (i > 0)
			appendStringInfoString(&lab, ", ");
		append_json_string(&lab, labels[i].key, strlen(labels[i].key));
		appendStringInfoString(&lab, ": ");
		append_json_string(&lab, labels[i].val, labels[i].vallen);
	}
	appendStringInfoChar(&lab, '}');

	memset(&fixed, 0, sizeof(fixed));
	fixed.time = time;
	fixed.value = value;
	fixed.source = (int32) source;
	strs[0] = entity;
	lens[0] = strlen(entity);
	strs[1] = name;
	lens[1] = namelen;
	strs[2] = lab.data;
	lens[2] = lab.len;
	rowbuf_append(&st->result->rows, ROW_METRIC, index, &fixed, sizeof(fixed),
				  3, strs, lens);
	ev->nrows[ROW_METRIC]++;
	pfree(lab.data);
}

/* prefix, then keys[from..nkeys) joined by dots, into st->scratch */
static void
build_name(MapState *st, const char *prefix, const char *const *keys,
		   int from, int nkeys)
{
	resetStringInfo(&st->scratch);
	if (prefix)
		appendStringInfoString(&st->scratch, prefix);
	for (int i = from; i < nkeys; i++)
	{
		if (i > from)
			appendStringInfoChar(&st->scratch, '.');
		appendStringInfoString(&st->scratch, keys[i]);
	}
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
check_label(MapState *st, const char *what, const char *val, EventError *err)
{
	if ((int) strlen(val) > st->opts->max_label_bytes)
	{
		set_error(err, MAP_ERR_TOO_LARGE,
				  "label %s is longer than %d bytes", what,
				  st->opts->max_label_bytes);
		return false;
	}
	return true;
}

static bool
is_envelope_key(const char *key)
{
	return strcmp(key, "source") == 0 ||
		strcmp(key, "gateway_id") == 0 ||
		strcmp(key, "agent_id") == 0 ||
		strcmp(key, "entity_id") == 0 ||
		strcmp(key, "period_start") == 0 ||
		strcmp(key, "period_end") == 0;
}

/*
 * The metric rows of a telemetry event: every number or boolean leaf
 * outside the envelope (and, for gateways, outside config).
 */
static bool
map_metrics(MapState *st, EventRows *ev, int index, EventSource source,
			const char *entity, TimestampTz time, EventError *err)
{
	int64		nmetrics = 0;

	if (st->too_many)
	{
		set_error(err, MAP_ERR_TOO_LARGE,
				  "the event yields more than %d rows",
				  st->opts->max_rows_per_event);
		return false;
	}

	for (int i = 0; i < st->nleaves; i++)
	{
		const MapLeaf *leaf = &st->leaves[i];
		const char *const *k = leaf->keys;
		double		value;
		Label		labels[2];
		int			nlabels = 0;

		if (leaf->type == LEAF_TRUE)
			value = 1;
		else if (leaf->type == LEAF_FALSE)
			value = 0;
		else if (leaf->type == LEAF_NUMBER)
		{
			if (!parse_double(leaf->val, &value))
			{
				build_name(st, NULL, k, 0, leaf->nkeys);
				set_error(err, MAP_ERR_INVALID_TYPE,
						  "value of \"%s\" is out of range for a float8",
						  st->scratch.data);
				return false;
			}
		}
		else
			continue;

		if (leaf->nkeys == 1 && is_envelope_key(k[0]))
			continue;
		if (source == SOURCE_GATEWAY && strcmp(k[0], "config") == 0)
			continue;

		if (source == SOURCE_GATEWAY && leaf->nkeys >= 4 &&
			strcmp(k[0], "business") == 0 && strcmp(k[1], "routes") == 0)
		{
			const char *route = k[2];
			const char *key = k[3];

			if (!check_label(st, "route", route, err))
				return false;
			labels[nlabels].key = "route";
			labels[nlabels].val = route;
			labels[nlabels].vallen = strlen(route);
			nlabels++;
			if (leaf->nkeys == 4 && strlen(key) == 3 &&
				is_digit(key[0]) && is_digit(key[1]) && is_digit(key[2]))
			{
				labels[nlabels].key = "status";
				labels[nlabels].val = key;
				labels[nlabels].vallen = 3;
				nlabels++;
				build_name(st, "business.route.requests", k, 0, 0);
			}
			else
				build_name(st, "business.route.", k, 3, leaf->nkeys);
		}
		else if (source == SOURCE_SDK && leaf->nkeys >= 3 &&
				 strcmp(k[0], "interactions") == 0)
		{
			const char *vendor = k[1];

			if (!check_label(st, "vendor", vendor, err))
				return false;
			labels[nlabels].key = "vendor";
			labels[nlabels].val = vendor;
			labels[nlabels].vallen = strlen(vendor);
			nlabels++;
			if (leaf->nkeys >= 4 && strcmp(k[2], "errors") == 0)
			{
				const char *error;

				build_name(st, NULL, k, 3, leaf->nkeys);
				error = pstrdup(st->scratch.data);
				if (!check_label(st, "error", error, err))
					return false;
				labels[nlabels].key = "error";
				labels[nlabels].val = error;
				labels[nlabels].vallen = strlen(error);
				nlabels++;
				build_name(st, "interaction.errors", k, 0, 0);
			}
			else
				build_name(st, "interaction.", k, 2, leaf->nkeys);
		}
		else
			build_name(st, NULL, k, 0, leaf->nkeys);

		if (st->scratch.len > MAX_METRIC_NAME_BYTES)
		{
			set_error(err, MAP_ERR_TOO_LARGE,
					  "metric name \"%s...\" is longer than %d bytes",
					  clip(st->scratch.data, 64), MAX_METRIC_NAME_BYTES);
			return false;
		}
		if (++nmetrics > st->opts->max_rows_per_event)
		{
			set_error(err, MAP_ERR_TOO_LARGE,
					  "the event yields more than %d rows",
					  st->opts->max_rows_per_event);
			return false;
		}
		emit_metric(st, ev, index, entity, st->scratch.data, st->scratch.len,
					labels, nlabels, value, time, source);
	}
	return true;
}

/* period_end (the rows' time) and period_start of a telemetry event */
static bool
telemetry_time(MapState *st, TimestampTz *time, EventError *err)
{
	const MapLeaf *start = top_leaf(st, "period_start");
	double		end_secs;

	if (!require_time(st, "period_end", st->opts->metrics_retention_us,
					  time, &end_secs, err))
		return false;
	if (start != NULL && start->type != LEAF_NULL)
	{
		double		start_secs;

		if (start->type != LEAF_NUMBER)
		{
			set_error(err, MAP_ERR_INVALID_TYPE,
					  "field \"period_start\" must be a number of unix seconds, not %s",
					  leaf_type_name(start->type));
			return false;
		}
		start_secs = strtod(start->val, NULL);
		if (end_secs < start_secs)
		{
			set_error(err, MAP_ERR_TIME_OUT_OF_RANGE,
					  "field \"period_end\" is before \"period_start\"");
			return false;
		}
	}
	return true;
}

/* A config string field: absent and null leave it unset. */
static bool
config_string(MapState *st, const char *key, uint32 bit, uint32 *present,
			  const char **str, uint32 *len, EventError *err)
{
	const MapLeaf *leaf = sub_leaf(st, "config", key);

	*str = "";
	*len = 0;
	if (leaf == NULL || leaf->type == LEAF_NULL)
		return true;
	if (leaf->type != LEAF_STRING)
	{
		set_error(err, MAP_ERR_INVALID_TYPE,
				  "field \"config.%s\" must be a string, not %s",
				  key, leaf_type_name(leaf->type));
		return false;
	}
	*str = leaf->val;
	*len = leaf->vallen;
	*present |= bit;
	return true;
}

static bool
map_config(MapState *st, EventRows *ev, int index, const char *gateway,
		   TimestampTz period_end, EventError *err)
{
	const MapLeaf *config = top_leaf(st, "config");
	const MapLeaf *price;
	ConfigRow	fixed;
	const char *strs[5];
	uint32		lens[5];
	char		price_text[24];

	if (config == NULL || config->type == LEAF_NULL)
		return true;
	if (config->type != LEAF_OBJECT)
	{
		set_error(err, MAP_ERR_INVALID_TYPE,
				  "field \"config\" must be an object, not %s",
				  leaf_type_name(config->type));
		return false;
	}

	memset(&fixed, 0, sizeof(fixed));
	fixed.period_end = period_end;
	strs[0] = gateway;
	lens[0] = strlen(gateway);
	strs[1] = "";
	lens[1] = 0;

	price = sub_leaf(st, "config", "price_per_unit");
	if (price != NULL && price->type != LEAF_NULL)
	{
		if (!parse_u64(price, price_text))
		{
			set_error(err, MAP_ERR_INVALID_AMOUNT,
					  "field \"config.price_per_unit\" must be an integer from 0 to 18446744073709551615");
			return false;
		}
		strs[1] = price_text;
		lens[1] = strlen(price_text);
		fixed.present |= CONFIG_HAS_PRICE;
	}
	if (!config_string(st, "accepted_mint", CONFIG_HAS_MINT, &fixed.present,
					   &strs[2], &lens[2], err) ||
		!config_string(st, "withdrawal_address", CONFIG_HAS_WITHDRAWAL,
					   &fixed.present, &strs[3], &lens[3], err) ||
		!config_string(st, "version", CONFIG_HAS_VERSION, &fixed.present,
					   &strs[4], &lens[4], err))
		return false;

	/* an empty config changes nothing: no row */
	if (fixed.present == 0)
		return true;
	rowbuf_append(&st->result->rows, ROW_CONFIG, index, &fixed, sizeof(fixed),
				  5, strs, lens);
	ev->nrows[ROW_CONFIG]++;
	return true;
}

static bool
map_gateway(MapState *st, EventRows *ev, int index, EventError *err)
{
	const char *gateway;
	TimestampTz time;

	if ((gateway = require_id(st, "gateway_id", BASE58_ID_BYTES, err)) == NULL ||
		!check_entity_allowed(st, "gateway_id", gateway, err) ||
		!telemetry_time(st, &time, err) ||
		!map_metrics(st, ev, index, SOURCE_GATEWAY, gateway, time, err) ||
		!map_config(st, ev, index, gateway, time, err))
		return false;
	return true;
}

static bool
map_sdk(MapState *st, EventRows *ev, int index, EventError *err)
{
	const char *agent;
	TimestampTz time;

	if ((agent = require_id(st, "agent_id", BASE58_ID_BYTES, err)) == NULL ||
		!check_entity_allowed(st, "agent_id", agent, err) ||
		!telemetry_time(st, &time, err) ||
		!map_metrics(st, ev, index, SOURCE_SDK, agent, time, err))
		return false;
	return true;
}

static bool
require_u64(MapState *st, const char *key, char *out, EventError *err)
{
	const MapLeaf *leaf = top_leaf(st, key);

	if (leaf == NULL || leaf->type == LEAF_NULL)
	{
		set_error(err, MAP_ERR_MISSING_FIELD, "missing field \"%s\"", key);
		return false;
	}
	if (!parse_u64(leaf, out))
	{
		set_error(err, MAP_ERR_INVALID_AMOUNT,
				  "field \"%s\" must be an integer from 0 to 18446744073709551615, as a JSON number or a decimal string",
				  key);
		return false;
	}
	return true;
}

static bool
map_intent(MapState *st, EventRows *ev, int index, EventError *err)
{
	const char *gateway;
	const char *agent;
	const char *token;
	const char *signature;
	char		nonce[24];
	char		amount[24];
	IntentRow	fixed;
	const char *strs[6];
	uint32		lens[6];

	if ((gateway = require_id(st, "gateway_id", BASE58_ID_BYTES, err)) == NULL ||
		!check_entity_allowed(st, "gateway_id", gateway, err) ||
		(agent = require_id(st, "agent_id", BASE58_ID_BYTES, err)) == NULL ||
		(token = require_id(st, "token", BASE58_ID_BYTES, err)) == NULL ||
		(signature = require_id(st, "signature", BASE58_SIGNATURE_BYTES, err)) == NULL ||
		!require_u64(st, "nonce", nonce, err) ||
		!require_u64(st, "amount", amount, err))
		return false;

	memset(&fixed, 0, sizeof(fixed));
	fixed.received_at = st->opts->now;
	strs[0] = gateway;
	strs[1] = agent;
	strs[2] = token;
	strs[3] = signature;
	strs[4] = nonce;
	strs[5] = amount;
	for (int i = 0; i < 6; i++)
		lens[i] = strlen(strs[i]);
	rowbuf_append(&st->result->rows, ROW_INTENT, index, &fixed, sizeof(fixed),
				  6, strs, lens);
	ev->nrows[ROW_INTENT]++;
	return true;
}

static bool
map_log(MapState *st, EventRows *ev, int index, EventError *err)
{
	const char *entity;
	const MapLeaf *level;
	const MapLeaf *message;
	const MapLeaf *fields;
	LogRow		fixed;
	const char *strs[4];
	uint32		lens[4];

	memset(&fixed, 0, sizeof(fixed));
	if ((entity = require_id(st, "entity_id", BASE58_ID_BYTES, err)) == NULL ||
		!check_entity_allowed(st, "entity_id", entity, err) ||
		!require_time(st, "time", st->opts->logs_retention_us, &fixed.time,
					  NULL, err) ||
		(level = require_string(st, "level", err)) == NULL ||
		(message = require_string(st, "message", err)) == NULL)
		return false;
	if (strcmp(level->val, "debug") != 0 && strcmp(level->val, "info") != 0 &&
		strcmp(level->val, "warn") != 0 && strcmp(level->val, "error") != 0)
	{
		set_error(err, MAP_ERR_INVALID_TYPE,
				  "field \"level\" must be one of debug, info, warn, error");
		return false;
	}
	fields = top_leaf(st, "fields");
	strs[3] = "";
	lens[3] = 0;
	if (fields != NULL && fields->type != LEAF_NULL)
	{
		if (fields->type != LEAF_OBJECT || st->fields_json == NULL)
		{
			set_error(err, MAP_ERR_INVALID_TYPE,
					  "field \"fields\" must be an object, not %s",
					  leaf_type_name(fields->type));
			return false;
		}
		if (st->fields_bad_number != NULL)
		{
			set_error(err, MAP_ERR_INVALID_TYPE,
					  "field \"fields\" holds the number %s, which is out of the range PostgreSQL can store",
					  clip(st->fields_bad_number, 40));
			return false;
		}
		if (st->fields_len > MAX_FIELDS_BYTES)
		{
			set_error(err, MAP_ERR_TOO_LARGE,
					  "field \"fields\" is larger than %d bytes", MAX_FIELDS_BYTES);
			return false;
		}
		strs[3] = st->fields_json;
		lens[3] = st->fields_len;
	}

	strs[0] = entity;
	lens[0] = strlen(entity);
	strs[1] = level->val;
	lens[1] = level->vallen;
	strs[2] = message->val;
	lens[2] = message->vallen;
	rowbuf_append(&st->result->rows, ROW_LOG, index, &fixed, sizeof(fixed),
				  4, strs, lens);
	ev->nrows[ROW_LOG]++;
	return true;
}

/* ------------------------------------------------------------------------
 * Accepting and rejecting events
 * ------------------------------------------------------------------------
 */

static void
reject_event(MapState *st, int index, MapErrorCode code, const char *message,
			 const char *excerpt, int excerpt_len)
{
	MapResult  *result = st->result;
	SavedContext old;

	/* rendered in the event's context: it may be as large as the event */
	if (st->opts->record_rejects && excerpt == NULL && st->excerpt_fn != NULL)
		excerpt = st->excerpt_fn(st->excerpt_arg, &excerpt_len);

	old = SWITCH_TO_OUTER(st);
	result->rejected++;
	if (result->nerrors < st->opts->max_errors_listed)
	{
		MapError   *e;

		if (result->nerrors >= st->maxerrors)
		{
			st->maxerrors = st->maxerrors == 0 ? 16 : st->maxerrors * 2;
			if (result->errors == NULL)
				result->errors = palloc(sizeof(MapError) * st->maxerrors);
			else
				result->errors = repalloc(result->errors,
										  sizeof(MapError) * st->maxerrors);
		}
		e = &result->errors[result->nerrors++];
		e->index = index;
		e->code = code;
		e->message = pstrdup(message);
	}

	if (st->opts->record_rejects)
	{
		RejectRow	fixed;
		const char *strs[4];
		uint32		lens[4];
		const char *addr = st->opts->remote_addr ? st->opts->remote_addr : "";

		memset(&fixed, 0, sizeof(fixed));
		fixed.time = st->opts->now;
		strs[0] = map_error_code_name(code);
		lens[0] = strlen(strs[0]);
		strs[1] = message;
		lens[1] = strlen(message);
		strs[2] = addr;
		lens[2] = strlen(addr);
		strs[3] = excerpt ? excerpt : "";
		lens[3] = excerpt ? excerpt_length(excerpt, excerpt_len, EXCERPT_MAX_BYTES) : 0;
		rowbuf_append(&result->rows, ROW_REJECT, index, &fixed, sizeof(fixed),
					  4, strs, lens);
		result->nrows[ROW_REJECT]++;
	}
	SWITCH_BACK(old);
}

/* Back to the caller's context, forgetting the event's temporaries. */
static void
event_memory_done(MapState *st)
{
#ifndef FRONTEND
	MemoryContextSwitchTo(st->outer_cxt);
	MemoryContextReset(st->event_cxt);
#endif
}

/*
 * Refuse the whole request (a cap, or not JSON): nothing of it is kept.
 * Rejected events stay counted and listed, for the answer of
 * MAP_TOO_MANY_REJECTS.
 */
static void
map_refuse(MapState *st, MapStatus status, const char *message)
{
	MapResult  *result = st->result;

	/* it may come in the middle of an event */
#ifndef FRONTEND
	MemoryContextSwitchTo(st->outer_cxt);
#endif
	result->status = status;
	result->refusal_message = pstrdup(message);
	result->accepted = 0;
	result->nintents = 0;
	memset(result->nrows, 0, sizeof(result->nrows));
	memset(result->events_by_source, 0, sizeof(result->events_by_source));
	resetStringInfo(&result->rows);
	if (status != MAP_TOO_MANY_REJECTS)
	{
		result->rejected = 0;
		result->nerrors = 0;
	}
}

/*
 * Before an event is mapped: false (and the request refused) when the
 * request already holds max_events events.
 */
static bool
cap_events(MapState *st)
{
	const MapOptions *o = st->opts;
	MapResult  *result = st->result;
	char	   *msg;

	if (o->max_events <= 0 || result->accepted + result->rejected < o->max_events)
		return true;
	msg = psprintf("the request holds more than %d events (machpay.max_events_per_request)",
				   o->max_events);
	map_refuse(st, MAP_TOO_LARGE, msg);
	return false;
}

/* After an event is mapped: the caps on rows and on rejected events. */
static void
cap_rows_and_rejects(MapState *st)
{
	const MapOptions *o = st->opts;
	MapResult  *result = st->result;
	int64		rows = 0;
	char	   *msg = NULL;
	MapStatus	status = MAP_TOO_LARGE;

	for (int k = ROW_METRIC; k <= ROW_KIND_MAX; k++)
		if (k != ROW_REJECT)
			rows += result->nrows[k];
	if (o->max_rows > 0 && rows > o->max_rows)
		msg = psprintf("the request yields more than " INT64_FORMAT " rows (machpay.max_rows_per_request)",
					   o->max_rows);
	else if (o->max_rows_per_body_byte > 0 && o->body_bytes > 0 &&
			 rows + result->rejected > o->body_bytes * o->max_rows_per_body_byte)
		msg = psprintf("the request yields more than %d rows per byte of its body as sent (machpay.max_rows_per_body_byte)",
					   o->max_rows_per_body_byte);
	else if (o->max_rejects > 0 && result->rejected > o->max_rejects)
	{
		status = MAP_TOO_MANY_REJECTS;
		msg = psprintf("more than %d events of the request were rejected (machpay.max_rejects_per_request); the rest was not read and nothing was stored",
					   o->max_rejects);
	}
	if (msg != NULL)
		map_refuse(st, status, msg);
}

void
map_event_end(MapState *st, int index, const char *excerpt, int excerpt_len)
{
	MapResult  *result = st->result;
	int			start = result->rows.len;
	EventRows	ev;
	EventError	err;
	const MapLeaf *source;
	EventSource src = SOURCE_GATEWAY;
	bool		ok = false;

	if (result->status != MAP_OK || !cap_events(st))
	{
		event_memory_done(st);
		return;
	}
	memset(&ev, 0, sizeof(ev));
	memset(&err, 0, sizeof(err));

	source = require_string(st, "source", &err);
	if (source != NULL)
	{
		if (strcmp(source->val, "gateway") == 0)
		{
			src = SOURCE_GATEWAY;
			ok = map_gateway(st, &ev, index, &err);
		}
		else if (strcmp(source->val, "sdk") == 0)
		{
			src = SOURCE_SDK;
			ok = map_sdk(st, &ev, index, &err);
		}
		else if (strcmp(source->val, "payment_intent") == 0)
		{
			src = SOURCE_PAYMENT_INTENT;
			ok = map_intent(st, &ev, index, &err);
		}
		else if (strcmp(source->val, "log") == 0)
		{
			src = SOURCE_LOG;
			ok = map_log(st, &ev, index, &err);
		}
		else
			set_error(&err, MAP_ERR_UNKNOWN_SOURCE,
					  "unknown source \"%s\"; expected gateway, sdk, payment_intent or log",
					  clip(source->val, 64));
	}

	if (ok)
	{
		result->accepted++;
		result->events_by_source[src]++;
		for (int k = 0; k <= ROW_KIND_MAX; k++)
			result->nrows[k] += ev.nrows[k];
		result->nintents += (int) ev.nrows[ROW_INTENT];
	}
	else
	{
		Assert(err.failed);
		result->rows.len = start;
		result->rows.data[start] = '\0';
		reject_event(st, index, err.code, err.message, excerpt, excerpt_len);
	}
	event_memory_done(st);
	cap_rows_and_rejects(st);
}

void
map_event_not_object(MapState *st, int index, const char *excerpt,
					 int excerpt_len)
{
	if (st->result->status != MAP_OK || !cap_events(st))
		return;
	reject_event(st, index, MAP_ERR_INVALID_TYPE, "an event must be a JSON object",
				 excerpt, excerpt_len);
	cap_rows_and_rejects(st);
}

/* Nothing of a bad request is kept: forget every row and count. */
void
map_bad_request(MapState *st, const char *message)
{
	map_refuse(st, MAP_BAD_REQUEST, message);
}

/* A JSON string literal, escaped as the mapper writes labels. */
void
map_json_string(StringInfo out, const char *s, size_t len)
{
	append_json_string(out, s, (int) len);
}
