/*-------------------------------------------------------------------------
 * series_registry_load.c
 *	  The series registry (series_registry.h) from machpay.metric_series:
 *	  loading it, loading it again after series were removed, and dropping
 *	  reservations past their lifetime.
 *
 * A *load* reads every series of the table under a fresh snapshot, then,
 * under the exclusive lock, marks them known in the load's *generation*
 * and drops what the table no longer has: series known before the load
 * began that its snapshot lacks, and reservations past their lifetime.
 * A *sweep* drops only the latter, without reading the table.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "buffer/series_registry_int.h"
#include "common/machpay.h"
#include "common/stats.h"

/* A load that has not finished in this time is taken over. */
#define LOADER_TIMEOUT_MS		60000
#define LOAD_FETCH_ROWS			10000
#define REFRESH_CHECK_MS		100

/* ------------------------------------------------------------------------
 * Sweeping reservations
 * ------------------------------------------------------------------------
 */

static void
entity_adjust(uint64 entity, int delta)
{
	EntitySlot *e = hash_search(registry_entities, &entity, HASH_FIND, NULL);

	if (e == NULL)
		return;
	e->nseries += delta;
	if (e->nseries <= 0)
		hash_search(registry_entities, &entity, HASH_REMOVE, NULL);
}

/*
 * Drop reservations past the lifetime: their rows were refused after the
 * admission (429, 503, a rollback), or written and dropped by the writer.
 */
static void
sweep_locked(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	SeriesSlot *s;
	TimestampTz cutoff = now - registry_lifetime_us();
	TimestampTz oldest = now;

	hash_seq_init(&seq, registry_series);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		if (s->state != SERIES_RESERVED)
			continue;
		if (s->stamp < cutoff)
		{
			entity_adjust(s->entity, -1);
			registry->nreserved--;
			hash_search(registry_series, &s->key, HASH_REMOVE, NULL);
		}
		else if (s->stamp < oldest)
			oldest = s->stamp;
	}
	registry->oldest_reserved = oldest;
}

static bool
sweep_due(TimestampTz now)
{
	return registry->nreserved > 0 &&
		now - registry->oldest_reserved > registry_lifetime_us();
}

/* ------------------------------------------------------------------------
 * Loading from machpay.metric_series
 * ------------------------------------------------------------------------
 */

typedef struct LoadedSeries
{
	uint64		key;
	uint64		entity;
} LoadedSeries;

/*
 * Every series of the table, hashed, read under a snapshot taken now (not
 * the caller's transaction snapshot, which may be older than the
 * generation the load began).  Read as the table's owner: buffer_ingest()
 * callers need no SELECT on it.  At most capacity + 1 series.
 */
static LoadedSeries *
read_table(int64 *n_out)
{
	MemoryContext outer = CurrentMemoryContext;
	Oid			nsp = get_namespace_oid(MACHPAY_SCHEMA, false);
	Oid			relid = get_relname_relid("metric_series", nsp);
	Relation	rel;
	Oid			owner;
	Oid			save_userid;
	int			save_sec;
	int64		max = machpay_series_registry_size + 1;
	int64		alloc = Min(max, 65536);
	int64		n = 0;
	LoadedSeries *out = MemoryContextAllocHuge(outer, sizeof(LoadedSeries) * alloc);
	SPIPlanPtr	plan;
	Portal		portal;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.metric_series\" does not exist", MACHPAY_SCHEMA)));
	rel = table_open(relid, AccessShareLock);
	owner = rel->rd_rel->relowner;
	table_close(rel, NoLock);

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetLatestSnapshot());
	plan = SPI_prepare("SELECT entity_id, metric_name, labels::pg_catalog.text"
					   "  FROM machpay.metric_series", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, LOAD_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed && n < max; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull[3];
			text	   *t[3];

			for (int c = 0; c < 3; c++)
			{
				Datum		d = SPI_getbinval(tup, desc, c + 1, &isnull[c]);

				t[c] = isnull[c] ? NULL : DatumGetTextPP(d);
			}
			if (t[0] == NULL || t[1] == NULL || t[2] == NULL)
				continue;
			if (n == alloc)
			{
				alloc = Min(max, alloc * 2);
				out = repalloc_huge(out, sizeof(LoadedSeries) * alloc);
			}
			out[n].key = registry_series_key(VARDATA_ANY(t[0]), VARSIZE_ANY_EXHDR(t[0]),
									VARDATA_ANY(t[1]), VARSIZE_ANY_EXHDR(t[1]),
									VARDATA_ANY(t[2]), VARSIZE_ANY_EXHDR(t[2]));
			out[n].entity = registry_entity_key(VARDATA_ANY(t[0]), VARSIZE_ANY_EXHDR(t[0]));
			n++;
		}
		SPI_freetuptable(SPI_tuptable);
		if (n >= max)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	PopActiveSnapshot();
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);
	*n_out = n;
	return out;
}

/*
 * Under the exclusive lock: the table's series become known in generation
 * gen; what was known before gen and is not in the table goes, as do
 * reservations past their lifetime; entity counts are rebuilt.
 */
static void
rebuild_locked(const LoadedSeries *loaded, int64 n, uint32 gen, TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	SeriesSlot *s;
	EntitySlot *e;
	bool		overflow = false;
	TimestampTz cutoff = now - registry_lifetime_us();

	for (int64 i = 0; i < n; i++)
	{
		bool		found;

		s = hash_search(registry_series, &loaded[i].key, HASH_FIND, NULL);
		if (s == NULL)
		{
			if (hash_get_num_entries(registry_series) >= machpay_series_registry_size)
			{
				overflow = true;
				continue;
			}
			s = hash_search(registry_series, &loaded[i].key, HASH_ENTER, &found);
			s->entity = loaded[i].entity;
		}
		s->state = SERIES_KNOWN;
		s->generation = gen;
	}

	registry->nreserved = 0;
	registry->oldest_reserved = now;
	hash_seq_init(&seq, registry_series);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		bool		drop = s->state == SERIES_KNOWN
			? s->generation < gen
			: s->stamp < cutoff;

		if (drop)
			hash_search(registry_series, &s->key, HASH_REMOVE, NULL);
		else if (s->state == SERIES_RESERVED)
			registry_note_reserved(s->stamp);
	}

	hash_seq_init(&seq, registry_entities);
	while ((e = hash_seq_search(&seq)) != NULL)
		hash_search(registry_entities, &e->key, HASH_REMOVE, NULL);
	hash_seq_init(&seq, registry_series);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		bool		found;

		e = hash_search(registry_entities, &s->entity, HASH_ENTER_NULL, &found);
		if (e == NULL)
		{
			overflow = true;
			continue;
		}
		if (!found)
			e->nseries = 0;
		e->nseries++;
	}
	registry->overflowed = overflow;
}

/*
 * Concurrent loads are safe (each one drops only what was known before it
 * began and its later snapshot lacks); a process that finds another one
 * loading leaves it the work unless force.
 */
static void
registry_load(bool force)
{
	TimestampTz now = GetCurrentTimestamp();
	uint32		gen;
	uint64		removals;
	LoadedSeries *loaded;
	int64		n = 0;
	MemoryContext cxt;
	MemoryContext oldcxt;
	TimestampTz locked_at;
	TimestampTz unlocked_at;

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	if (!force && registry->loader_pid != 0 && registry->loader_pid != MyProcPid &&
		!TimestampDifferenceExceeds(registry->loader_started, now, LOADER_TIMEOUT_MS))
	{
		LWLockRelease(registry->lock);
		return;					/* another process is loading it */
	}
	registry->loader_pid = MyProcPid;
	registry->loader_started = now;
	gen = ++registry->generation;
	removals = stats_get(STAT_SERIES_REMOVALS);
	LWLockRelease(registry->lock);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "machpay series registry load",
								ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		loaded = read_table(&n);
	}
	PG_CATCH();
	{
		LWLockAcquire(registry->lock, LW_EXCLUSIVE);
		if (registry->loader_pid == MyProcPid)
			registry->loader_pid = 0;
		LWLockRelease(registry->lock);
		PG_RE_THROW();
	}
	PG_END_TRY();

	locked_at = GetCurrentTimestamp();
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	rebuild_locked(loaded, n, gen, GetCurrentTimestamp());
	registry->loaded = true;
	registry->loaded_removals = removals;
	if (removals == stats_get(STAT_SERIES_REMOVALS))
		pg_atomic_write_u64(&registry->stale_since, 0);
	if (registry->loader_pid == MyProcPid)
		registry->loader_pid = 0;
	LWLockRelease(registry->lock);
	unlocked_at = GetCurrentTimestamp();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);

	ereport(LOG,
			(errmsg("machpay series registry loaded " INT64_FORMAT " series in %ld ms (%ld ms of it exclusive)",
					n, (long) ((unlocked_at - now) / 1000),
					(long) ((unlocked_at - locked_at) / 1000))));
	if (registry->overflowed)
		ereport(WARNING,
				(errmsg("machpay series registry holds fewer series than machpay.metric_series (%d)",
						machpay_series_registry_size),
				 errdetail("Events of series it does not hold are refused (too_large) while the limit machpay.max_series_per_entity is on."),
				 errhint("Raise machpay.series_registry_size (server start).")));
}

/*
 * What is due: a load (true) and a sweep (*sweep).  A registry that is
 * stale (series were removed since its load) is due only once it has been
 * for grace_ms: the maintenance worker reloads it (grace 0), the ingest
 * workers and writers only when it did not, so a reload of a large table
 * does not stall their loops or flushes.
 */
static bool
load_due(int grace_ms, bool *sweep)
{
	bool		loaded;
	bool		stale;
	TimestampTz now = GetCurrentTimestamp();
	uint64		since;

	LWLockAcquire(registry->lock, LW_SHARED);
	loaded = registry->loaded;
	stale = registry->loaded_removals != stats_get(STAT_SERIES_REMOVALS);
	*sweep = sweep_due(now);
	LWLockRelease(registry->lock);
	if (!loaded)
		return true;
	if (!stale)
		return false;
	since = pg_atomic_read_u64(&registry->stale_since);
	if (since == 0)
	{
		uint64		zero = 0;

		if (pg_atomic_compare_exchange_u64(&registry->stale_since, &zero, (uint64) now))
			since = (uint64) now;
		else
			since = zero;
	}
	return now - (TimestampTz) since >= (int64) grace_ms * 1000;
}

static void
sweep(void)
{
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	if (sweep_due(GetCurrentTimestamp()))
		sweep_locked(GetCurrentTimestamp());
	LWLockRelease(registry->lock);
}

/* The extension may have been dropped under a worker: then nothing to load. */
static bool
table_exists(void)
{
	Oid			nsp = get_namespace_oid(MACHPAY_SCHEMA, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("metric_series", nsp));
}

void
registry_refresh_in_xact(int grace_ms, bool force)
{
	bool		sweeping;

	if (registry == NULL || RecoveryInProgress() || !registry_workers_database() || !table_exists())
		return;
	if (load_due(grace_ms, &sweeping))
		registry_load(force);
	else if (sweeping)
		sweep();
}

void
series_registry_refresh(int grace_ms)
{
	static TimestampTz last_check = 0;
	bool		sweeping;
	MemoryContext oldcxt = CurrentMemoryContext;
	TimestampTz now = GetCurrentTimestamp();

	/* The ingest loop calls it every turn: look a few times a second. */
	if (registry == NULL || !TimestampDifferenceExceeds(last_check, now, REFRESH_CHECK_MS))
		return;
	last_check = now;
	if (RecoveryInProgress())
		return;
	if (!load_due(grace_ms, &sweeping))
	{
		if (sweeping)
			sweep();
		return;
	}
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		registry_refresh_in_xact(grace_ms, false);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		machpay_worker_report_and_abort(oldcxt);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
}
