/*-------------------------------------------------------------------------
 * map_reject.c
 *	  Rejecting accepted events after the mapping: a check that needs the
 *	  whole request's rows (the series registry's per-entity limit) turns
 *	  events the mapper accepted into rejected ones.
 *
 * A rejected event is rejected whole, as the mapper does it: every row of
 * it leaves the batch, it is counted rejected instead of accepted, listed
 * in the errors (in index order, within max_errors_listed) and, when the
 * options record rejects, leaves one dead-letter row.  Like the mapper
 * core, this calls no SQL and raises no error.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mapper/mapper.h"

/* Position of index among the sorted indexes, or -1. */
static int
index_position(const int32 *indexes, int n, int32 index)
{
	int			lo = 0;
	int			hi = n - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (indexes[mid] == index)
			return mid;
		if (indexes[mid] < index)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

/* The error goes in index order; past the listing cap it is only counted. */
static void
list_error(MapResult *result, const MapOptions *opts, int32 index,
		   MapErrorCode code, const char *message)
{
	int			pos = result->nerrors;
	int			cap = opts->max_errors_listed;

	while (pos > 0 && result->errors[pos - 1].index > index)
		pos--;
	if (pos >= cap)
		return;
	if (result->errors == NULL)
		result->errors = palloc(sizeof(MapError) * (result->nerrors + 1));
	else
		result->errors = repalloc(result->errors, sizeof(MapError) * (result->nerrors + 1));
	memmove(&result->errors[pos + 1], &result->errors[pos],
			sizeof(MapError) * (result->nerrors - pos));
	result->errors[pos].index = index;
	result->errors[pos].code = code;
	result->errors[pos].message = pstrdup(message);
	result->nerrors++;
	if (result->nerrors > cap)
		result->nerrors = cap;
}

static void
append_dead_letter(StringInfo rows, const MapOptions *opts, int32 index,
				   MapErrorCode code, const char *message, const char *excerpt)
{
	RejectRow	fixed;
	const char *strs[4];
	uint32		lens[4];

	memset(&fixed, 0, sizeof(fixed));
	fixed.time = opts->now;
	strs[0] = map_error_code_name(code);
	strs[1] = message;
	strs[2] = opts->remote_addr ? opts->remote_addr : "";
	strs[3] = excerpt ? excerpt : "";
	for (int i = 0; i < 4; i++)
		lens[i] = strlen(strs[i]);
	rowbuf_append(rows, ROW_REJECT, index, &fixed, sizeof(fixed), 4, strs, lens);
}

void
map_reject_events(MapResult *result, const MapOptions *opts,
				  const int32 *indexes, int n, MapErrorCode code,
				  const char *const *messages)
{
	StringInfoData kept;
	RowReader	rd;
	int32		last = -1;

	if (n <= 0)
		return;
	initStringInfo(&kept);
	rowbuf_reader_init(&rd, result->rows.data, result->rows.len);
	for (;;)
	{
		const char *start = rd.pos;
		RowView		row;
		int			k;

		if (!rowbuf_next(&rd, &row))
			break;
		k = index_position(indexes, n, row.event_index);
		if (k < 0)
		{
			appendBinaryStringInfo(&kept, start, (int) (rd.pos - start));
			continue;
		}
		result->nrows[row.kind]--;
		if (row.event_index == last)
			continue;
		/* The event's first row: it gives the source and the entity. */
		last = row.event_index;
		if (row.kind == ROW_METRIC)
		{
			MetricRow	m;

			memcpy(&m, row.fixed, sizeof(m));
			if (m.source >= 0 && m.source < EVENT_SOURCE_COUNT)
				result->events_by_source[m.source]--;
		}
		else if (row.kind == ROW_CONFIG)
			result->events_by_source[SOURCE_GATEWAY]--;
		result->accepted--;
		result->rejected++;
		list_error(result, opts, row.event_index, code, messages[k]);
		if (opts->record_rejects)
		{
			/* The excerpt is the entity: the limit is the entity's. */
			append_dead_letter(&kept, opts, row.event_index, code, messages[k],
							   row.nstrings > 0 ? row.str[0] : NULL);
			result->nrows[ROW_REJECT]++;
		}
	}
	pfree(result->rows.data);
	result->rows = kept;
}
