/*-------------------------------------------------------------------------
 * mapper_fuzz.c
 *	  libFuzzer harness for the event mapper (src/mapper/mapper*.c) compiled as
 *	  frontend code: request text in, rows and a response body
 *	  (src/ingest/ingest_response.c) out.
 *
 * The first input byte selects the options (bit 0: NDJSON, bit 1: a key
 * bound to one entity, bit 2: no dead-letter rows, bit 3: tiny limits so
 * the limit paths and the caps per request are reached with short inputs,
 * bit 4: a body size as sent of a tenth, as if gzipped); the rest is the body.
 * Every produced row is read back and checked, the response body is
 * built, and the per-input arena (fe_alloc.c) is freed so nothing leaks
 * across iterations.  With -DMAPPER_PRINT the same file becomes a tool
 * that prints what the mapper makes of files given on the command line.
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "fe_alloc.h"
#include "ingest/ingest_response.h"
#include "mapper/mapper.h"

/* The examples' period_end (1700000060) plus 10 s, as a TimestampTz. */
#define FUZZ_NOW_UNIX	INT64CONST(1700000070)
#define FUZZ_NOW		((FUZZ_NOW_UNIX - INT64CONST(946684800)) * USECS_PER_SEC)

#define FUZZ_ENTITY		"BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp"

static void
check_rows(const MapResult *result)
{
	RowReader	reader;
	RowView		row;
	int64		counted[ROW_KIND_MAX + 1] = {0};

	rowbuf_reader_init(&reader, result->rows.data, result->rows.len);
	while (rowbuf_next(&reader, &row))
	{
		if (row.kind < ROW_METRIC || row.kind > ROW_KIND_MAX)
			abort();
		counted[row.kind]++;
		for (int i = 0; i < row.nstrings; i++)
			if (row.str[i][row.len[i]] != '\0')
				abort();
	}
	if (reader.pos != result->rows.data + result->rows.len)
		abort();
	for (int k = ROW_METRIC; k <= ROW_KIND_MAX; k++)
		if (counted[k] != result->nrows[k])
			abort();
	if (result->nintents != counted[ROW_INTENT])
		abort();
	/* a refused request keeps nothing */
	if (result->status != MAP_OK &&
		(result->rows.len != 0 || result->accepted != 0 || result->nintents != 0))
		abort();
	if (result->nerrors > result->rejected)
		abort();
}

static void
run_one(const uint8_t *data, size_t size, bool print)
{
	MapOptions	opts;
	MapResult	result;
	StringInfoData out;
	uint8_t		mode = 0;

	if (size > 0)
	{
		mode = data[0];
		data++;
		size--;
	}
	map_options_init(&opts, FUZZ_NOW);
	if (mode & 0x02)
		opts.bound_entity = FUZZ_ENTITY;
	if (mode & 0x04)
		opts.record_rejects = false;
	if (mode & 0x08)
	{
		opts.max_depth = 4;
		opts.max_rows_per_event = 3;
		opts.max_label_bytes = 4;
		opts.max_errors_listed = 2;
		opts.max_events = 6;
		opts.max_rows = 8;
		opts.max_rejects = 3;
	}
	/* bit 4: the body came compressed to a tenth of its size */
	if (mode & 0x10)
		opts.body_bytes = size / 10 + 1;
	opts.remote_addr = "192.0.2.1";

	map_json_text((const char *) data, size, (mode & 0x01) != 0, &opts, &result);
	check_rows(&result);

	initStringInfo(&out);
	if (result.nintents > 0)
	{
		IntentOutcome *intents = palloc0(sizeof(IntentOutcome) * result.nintents);

		ingest_response_json(&out, &result, intents, result.nintents);
	}
	else
		ingest_response_json(&out, &result, NULL, 0);

	if (print)
	{
		RowReader	reader;
		RowView		row;

		printf("%s\n", out.data);
		rowbuf_reader_init(&reader, result.rows.data, result.rows.len);
		while (rowbuf_next(&reader, &row))
		{
			printf("  [%d] kind=%d", row.event_index, (int) row.kind);
			if (row.kind == ROW_METRIC)
			{
				const MetricRow *m = row.fixed;

				printf(" t=%lld v=%.17g src=%d", (long long) m->time, m->value, m->source);
			}
			for (int i = 0; i < row.nstrings; i++)
				printf(" |%s", row.str[i]);
			printf("\n");
		}
	}
	fe_arena_reset();
}

#ifndef MAPPER_PRINT
int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run_one(data, size, false);
	return 0;
}
#else
int
main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
	{
		FILE	   *f = fopen(argv[i], "rb");
		static uint8_t buf[16 * 1024 * 1024];
		size_t		n;

		if (f == NULL)
		{
			perror(argv[i]);
			return 1;
		}
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		printf("== %s\n", argv[i]);
		run_one(buf, n, true);
	}
	return 0;
}
#endif
