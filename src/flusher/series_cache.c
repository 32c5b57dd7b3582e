/*-------------------------------------------------------------------------
 * series_cache.c
 *	  Per-process cache of machpay.metric_series ids (see series_cache.h).
 *
 * Steady state is all hits: a gateway reports the same few dozen series
 * every minute, so the jsonb of the labels is only ever built on a miss, by
 * the SQL statement that resolves the misses of a whole batch.
 *
 * The cache must never hand out an id that is not (or no longer) in the
 * table, since points carry no foreign key:
 *  - ids learned in a transaction that aborts (or a subtransaction that
 *    rolls back) may be of series rows that vanished: any abort after a
 *    miss drops the whole cache;
 *  - TRUNCATE or a re-created extension changes the table's relfilenode or
 *    oid, checked at every batch start under a lock held to commit (which
 *    also keeps a TRUNCATE out while the batch runs).
 * A DELETE of single series rows is not detected; the DBA interface for
 * removing data is retention (partitions of points), not the dictionary.
 * The cache is bounded: past SERIES_CACHE_MAX entries it starts over.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "common/machpay.h"
#include "flusher/series_cache.h"

#define SERIES_CACHE_MAX		100000
#define SERIES_RESOLVE_TRIES	3

typedef struct SeriesKey
{
	const char *data;			/* entity \0 metric \0 labels */
	uint32		len;
	uint32		hash;
} SeriesKey;

struct SeriesEntry
{
	SeriesKey	key;			/* must be first */
	int64		series_id;		/* 0 = queued, not resolved yet */
};

static MemoryContext cache_cxt = NULL;
static HTAB *cache_htab = NULL;
static Oid	cache_relid = InvalidOid;
static Oid	cache_relfilenode = InvalidOid;
static bool cache_added_in_xact = false;
static bool callbacks_registered = false;

/* Misses of the current batch. */
static SeriesEntry **misses = NULL;
static int	nmisses = 0;
static int	maxmisses = 0;

/* Scratch key buffer for lookups. */
static char *scratch = NULL;
static Size scratch_size = 0;

static uint32
series_key_hash(const void *key, Size keysize)
{
	return ((const SeriesKey *) key)->hash;
}

static int
series_key_match(const void *key1, const void *key2, Size keysize)
{
	const SeriesKey *a = key1;
	const SeriesKey *b = key2;

	if (a->hash != b->hash || a->len != b->len)
		return 1;
	return memcmp(a->data, b->data, a->len);
}

static void
series_cache_reset(void)
{
	if (cache_cxt)
		MemoryContextReset(cache_cxt);
	cache_htab = NULL;
	misses = NULL;
	nmisses = maxmisses = 0;
	scratch = NULL;
	scratch_size = 0;
	cache_added_in_xact = false;
}

static void
series_cache_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			cache_added_in_xact = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (cache_added_in_xact)
				series_cache_reset();
			break;
		default:
			break;
	}
}

static void
series_cache_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && cache_added_in_xact)
		series_cache_reset();
}

static void
series_cache_create(void)
{
	HASHCTL		ctl;

	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(TopMemoryContext, "machpay series cache",
										  ALLOCSET_DEFAULT_SIZES);
	if (!callbacks_registered)
	{
		RegisterXactCallback(series_cache_xact_callback, NULL);
		RegisterSubXactCallback(series_cache_subxact_callback, NULL);
		callbacks_registered = true;
	}
	ctl.keysize = sizeof(SeriesKey);
	ctl.entrysize = sizeof(SeriesEntry);
	ctl.hash = series_key_hash;
	ctl.match = series_key_match;
	ctl.hcxt = cache_cxt;
	cache_htab = hash_create("machpay series cache", 1024, &ctl,
							 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

void
series_cache_begin_batch(void)
{
	Oid			nsp = get_namespace_oid(MACHPAY_SCHEMA, false);
	Oid			relid = get_relname_relid("metric_series", nsp);
	Relation	rel;
	Oid			filenode;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.metric_series\" does not exist", MACHPAY_SCHEMA)));

	/* Held to commit: no TRUNCATE can slip in behind the check. */
	rel = table_open(relid, AccessShareLock);
#if PG_VERSION_NUM < 160000
	filenode = rel->rd_node.relNode;
#else
	filenode = rel->rd_locator.relNumber;
#endif
	table_close(rel, NoLock);

	if (relid != cache_relid || filenode != cache_relfilenode ||
		(cache_htab && hash_get_num_entries(cache_htab) > SERIES_CACHE_MAX))
		series_cache_reset();
	cache_relid = relid;
	cache_relfilenode = filenode;
	if (cache_htab == NULL)
		series_cache_create();
	nmisses = 0;
}

SeriesEntry *
series_cache_lookup(const char *entity_id, uint32 entity_len,
					const char *metric_name, uint32 metric_len,
					const char *labels, uint32 labels_len)
{
	SeriesKey	key;
	SeriesEntry *entry;
	bool		found;
	Size		len = (Size) entity_len + metric_len + labels_len + 2;
	char	   *p;

	if (len > scratch_size)
	{
		Size		newsize = Max(len, 256);

		if (scratch)
			pfree(scratch);
		scratch = MemoryContextAlloc(cache_cxt, newsize * 2);
		scratch_size = newsize * 2;
	}
	p = scratch;
	memcpy(p, entity_id, entity_len);
	p += entity_len;
	*p++ = '\0';
	memcpy(p, metric_name, metric_len);
	p += metric_len;
	*p++ = '\0';
	memcpy(p, labels, labels_len);

	key.data = scratch;
	key.len = (uint32) len;
	key.hash = hash_bytes((const unsigned char *) scratch, (int) len);

	entry = hash_search(cache_htab, &key, HASH_ENTER, &found);
	if (!found)
	{
		char	   *copy = MemoryContextAlloc(cache_cxt, len);

		memcpy(copy, scratch, len);
		entry->key.data = copy;
		entry->series_id = 0;
		cache_added_in_xact = true;
	}
	/*
	 * An entry still at 0 when found was queued earlier in this batch: a
	 * batch that fails aborts its (sub)transaction, which drops the cache.
	 */
	if (!found)
	{
		if (nmisses >= maxmisses)
		{
			int			newmax = Max(64, maxmisses * 2);

			misses = misses
				? repalloc(misses, sizeof(SeriesEntry *) * newmax)
				: MemoryContextAlloc(cache_cxt, sizeof(SeriesEntry *) * newmax);
			maxmisses = newmax;
		}
		misses[nmisses++] = entry;
	}
	return entry;
}

int64
series_entry_id(const SeriesEntry *entry)
{
	return entry->series_id;
}

static ArrayType *
text_array(Datum *elems, int n)
{
	return construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT);
}

static SPIPlanPtr
series_plan(SPIPlanPtr *plan, const char *sql)
{
	if (*plan == NULL)
	{
		Oid			argtypes[3] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
		SPIPlanPtr	p = SPI_prepare(sql, 3, argtypes);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/*
 * Resolve the misses: look them up (one index probe each: a scalar
 * subquery, so the plan never turns into a scan of the whole dictionary);
 * insert those still missing with ON CONFLICT DO NOTHING and look again.
 * The second look is a new statement whose snapshot sees both our insert
 * and a series another process inserted and committed meanwhile (under
 * REPEATABLE READ the insert raises a serialization failure instead).
 */
void
series_cache_resolve(void)
{
	static SPIPlanPtr lookup_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
	int			pending = nmisses;

	if (nmisses == 0)
		return;

	for (int attempt = 0; attempt < 2 * SERIES_RESOLVE_TRIES && pending > 0; attempt++)
	{
		bool		inserting = (attempt % 2 == 1);
		Datum	   *ent = palloc(sizeof(Datum) * pending);
		Datum	   *met = palloc(sizeof(Datum) * pending);
		Datum	   *lab = palloc(sizeof(Datum) * pending);
		SeriesEntry **todo = palloc(sizeof(SeriesEntry *) * pending);
		int			n = 0;
		Datum		args[3];
		int			rc;

		for (int i = 0; i < nmisses; i++)
		{
			SeriesEntry *e = misses[i];
			const char *m;
			const char *l;

			if (e->series_id != 0)
				continue;
			m = e->key.data + strlen(e->key.data) + 1;
			l = m + strlen(m) + 1;
			ent[n] = PointerGetDatum(cstring_to_text(e->key.data));
			met[n] = PointerGetDatum(cstring_to_text(m));
			lab[n] = PointerGetDatum(cstring_to_text_with_len(l, e->key.data + e->key.len - l));
			todo[n++] = e;
		}
		args[0] = PointerGetDatum(text_array(ent, n));
		args[1] = PointerGetDatum(text_array(met, n));
		args[2] = PointerGetDatum(text_array(lab, n));

		if (inserting)
		{
			rc = SPI_execute_plan(series_plan(&insert_plan,
											  "INSERT INTO machpay.metric_series (entity_id, metric_name, labels)"
											  " SELECT DISTINCT e, m, l::jsonb"
											  "   FROM unnest($1::text[], $2::text[], $3::text[]) AS t(e, m, l)"
											  " ON CONFLICT (entity_id, metric_name, labels) DO NOTHING"),
								  args, NULL, false, 0);
			if (rc != SPI_OK_INSERT)
				elog(ERROR, "inserting metric series failed: %s", SPI_result_code_string(rc));
			continue;
		}

		rc = SPI_execute_plan(series_plan(&lookup_plan,
										  "SELECT t.o, (SELECT s.series_id FROM machpay.metric_series s"
										  "              WHERE s.entity_id = t.e AND s.metric_name = t.m"
										  "                AND s.labels = t.l::jsonb)"
										  "  FROM unnest($1::text[], $2::text[], $3::text[])"
										  "       WITH ORDINALITY AS t(e, m, l, o)"),
							  args, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "resolving metric series failed: %s", SPI_result_code_string(rc));
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			int64		o = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														SPI_tuptable->tupdesc, 1, &isnull));
			Datum		id = SPI_getbinval(SPI_tuptable->vals[r],
										   SPI_tuptable->tupdesc, 2, &isnull);

			if (!isnull && o >= 1 && o <= n)
				todo[o - 1]->series_id = DatumGetInt64(id);
		}
		SPI_freetuptable(SPI_tuptable);

		pending = 0;
		for (int i = 0; i < n; i++)
			if (todo[i]->series_id == 0)
				pending++;
	}

	if (pending > 0)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not resolve %d metric series", pending),
				 errhint("Another session keeps inserting the same series; retry the batch.")));
	nmisses = 0;
}
