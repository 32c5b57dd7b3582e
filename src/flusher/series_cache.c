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
 *  - series removed (maintenance prunes those no point refers to any more,
 *    or a DBA's DELETE): a statement trigger moves the shared counter
 *    series_removals when that transaction commits, before it releases its
 *    locks (commit_counter.c); a batch takes ROW EXCLUSIVE on the table
 *    first and starts over when the counter moved.  Maintenance holds
 *    SHARE ROW EXCLUSIVE while it prunes, so no batch can use an id it is
 *    removing.
 * The cache is bounded: past SERIES_CACHE_MAX entries it starts over.
 *
 * The per-entity limit machpay.max_series_per_entity is decided at
 * admission by the shared series registry (buffer/series_registry.c), which
 * this cache keeps informed: every series a batch resolves is reported to
 * it, known once the batch commits.  The check here is the last line, for
 * what the registry could not see (it was full, or disabled): a *new*
 * series of an entity that already has the limit's number of series gets
 * SERIES_REFUSED and the writer drops its rows and counts them.
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

#include "buffer/series_registry.h"
#include "commands/trigger.h"
#include "common/commit_counter.h"
#include "common/machpay.h"
#include "common/stats.h"
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
static uint64 cache_removals = 0;	/* series_removals when the cache began */
static int	cache_limit = -1;		/* max_series_per_entity it was built with */
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

	/*
	 * Held to commit: no TRUNCATE can slip in behind the check, and no
	 * prune (SHARE ROW EXCLUSIVE) while the batch uses ids.
	 */
	rel = table_open(relid, RowExclusiveLock);
#if PG_VERSION_NUM < 160000
	filenode = rel->rd_node.relNode;
#else
	filenode = rel->rd_locator.relNumber;
#endif
	table_close(rel, NoLock);

	if (relid != cache_relid || filenode != cache_relfilenode ||
		stats_get(STAT_SERIES_REMOVALS) != cache_removals ||
		machpay_max_series_per_entity != cache_limit ||
		(cache_htab && hash_get_num_entries(cache_htab) > SERIES_CACHE_MAX))
		series_cache_reset();
	cache_removals = stats_get(STAT_SERIES_REMOVALS);
	cache_limit = machpay_max_series_per_entity;
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

/* Per-entity room left under machpay.max_series_per_entity, in one resolve. */
typedef struct EntityRoom
{
	char		entity[NAMEDATALEN * 2];	/* hash key: the entity id, cut */
	int64		room;
} EntityRoom;

/*
 * Refuse the new series (misses still unresolved: not in the table) of
 * entities past the limit, in batch order: the first ones that fit are
 * created, the rest get SERIES_REFUSED.  Concurrent writers (the flusher
 * and machpay.ingest() sessions) may overshoot by one batch each.
 */
static void
refuse_over_limit(void)
{
	HASHCTL		ctl;
	HTAB	   *rooms;
	Datum	   *ents;
	int			nents = 0;
	Datum		arg;
	Oid			argtype = TEXTARRAYOID;
	int			rc;

	if (machpay_max_series_per_entity <= 0)
		return;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(((EntityRoom *) NULL)->entity);
	ctl.entrysize = sizeof(EntityRoom);
	ctl.hcxt = CurrentMemoryContext;
	rooms = hash_create("machpay series limit", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	ents = palloc(sizeof(Datum) * nmisses);
	for (int i = 0; i < nmisses; i++)
	{
		EntityRoom *r;
		bool		found;

		if (misses[i]->series_id != 0)
			continue;
		r = hash_search(rooms, misses[i]->key.data, HASH_ENTER, &found);
		if (!found)
		{
			r->room = machpay_max_series_per_entity;
			ents[nents++] = CStringGetTextDatum(misses[i]->key.data);
		}
	}
	if (nents == 0)
		return;

	arg = PointerGetDatum(text_array(ents, nents));
	rc = SPI_execute_with_args("SELECT s.entity_id, count(*) FROM machpay.metric_series s"
							   " WHERE s.entity_id = ANY ($1) GROUP BY 1",
							   1, &argtype, &arg, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "counting metric series failed: %s", SPI_result_code_string(rc));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		char	   *entity = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		int64		have = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
													   SPI_tuptable->tupdesc, 2, &isnull));
		EntityRoom *room = hash_search(rooms, entity, HASH_FIND, NULL);

		if (room)
			room->room -= have;
	}
	SPI_freetuptable(SPI_tuptable);

	for (int i = 0; i < nmisses; i++)
	{
		EntityRoom *r;

		if (misses[i]->series_id != 0)
			continue;
		r = hash_search(rooms, misses[i]->key.data, HASH_FIND, NULL);
		if (r->room > 0)
			r->room--;
		else
			misses[i]->series_id = SERIES_REFUSED;
	}
	hash_destroy(rooms);
}

/*
 * Resolve the misses: look them up (one index probe each: a scalar
 * subquery, so the plan never turns into a scan of the whole dictionary);
 * insert those still missing with ON CONFLICT DO NOTHING and look again.
 * The second look is a new statement whose snapshot sees both our insert
 * and a series another process inserted and committed meanwhile (under
 * REPEATABLE READ the insert raises a serialization failure instead).
 */
/*
 * One pass over the unresolved misses: insert them (ON CONFLICT DO NOTHING)
 * or look them up.  Returns how many are still unresolved (after an
 * insert: unknown until the next look, so the count given).
 */
static int
resolve_pass(bool inserting, int pending)
{
	static SPIPlanPtr lookup_plan = NULL;
	static SPIPlanPtr insert_plan = NULL;
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
		return pending;
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
	return pending;
}

/* The shared registry learns every series a batch found or created. */
static void
note_resolved(void)
{
	for (int i = 0; i < nmisses; i++)
	{
		const char *e = misses[i]->key.data;
		const char *m;
		const char *l;

		if (misses[i]->series_id <= 0)
			continue;
		m = e + strlen(e) + 1;
		l = m + strlen(m) + 1;
		series_registry_note_written(e, (uint32) (m - e - 1), m, (uint32) (l - m - 1),
									 l, (uint32) (misses[i]->key.len - (l - e)));
	}
}

void
series_cache_resolve(void)
{
	int			pending = nmisses;

	if (nmisses == 0)
		return;

	for (int attempt = 0; attempt < 2 * SERIES_RESOLVE_TRIES && pending > 0; attempt++)
	{
		bool		inserting = (attempt % 2 == 1);

		/* After the first look: what is left is new; apply the limit. */
		if (attempt == 1)
		{
			refuse_over_limit();
			pending = 0;
			for (int i = 0; i < nmisses; i++)
				if (misses[i]->series_id == 0)
					pending++;
			if (pending == 0)
				break;
		}
		pending = resolve_pass(inserting, pending);
	}

	if (pending > 0)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not resolve %d metric series", pending),
				 errhint("Another session keeps inserting the same series; retry the batch.")));
	note_resolved();
	nmisses = 0;
}

PG_FUNCTION_INFO_V1(machpay_series_removed);

/*
 * Statement trigger on machpay.metric_series (DELETE, TRUNCATE): every
 * process's cache starts over once this transaction commits.
 */
Datum
machpay_series_removed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("machpay_series_removed must be called as a trigger")));
	commit_counter_bump_at_commit(STAT_SERIES_REMOVALS, MACHPAY_SCHEMA ".metric_series");
	return PointerGetDatum(NULL);
}
