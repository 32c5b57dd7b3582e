/*-------------------------------------------------------------------------
 * series_registry.c
 *	  The shared-memory series registry (series_registry.h): per-entity
 *	  series limits decided at admission.
 *
 * Two shared hash tables under one LWLock: series (by the 64-bit hash of
 * entity, metric name and label text, the writers' series identity) and
 * entities (by the hash of the entity id, with the number of series the
 * registry holds for it).  The steady state is a shared-lock lookup per
 * metric row that finds every series; only an event with a new series
 * takes the lock exclusively, to count and reserve.
 *
 * The count of an entity never falls below what its table rows need, so
 * an admitted event is never refused by the writer's own check (the last
 * line, series_cache.c), as long as:
 *  - a reserved series stays counted until a writer commits it: writers
 *    report each series they resolve, and the report confirms it (known)
 *    when their transaction commits;
 *  - a reload (series_registry_load) only drops what the table no longer
 *    has: a series confirmed before the reload began (an older
 *    *generation*) that its snapshot lacks, or a reservation older than
 *    the reservation lifetime (machpay.flush_retry_window + 30 s, by
 *    when its rows were written or dropped).
 * Counts err upward only, so the check errs on refusal: reservations of
 * requests refused afterwards (429, 503, a rolled-back machpay.ingest())
 * count until the lifetime passes and a sweep drops them; series pruned
 * count until the reload that the removal counter triggers.
 *
 * Who loads it: the maintenance worker, once a second if due (it is idle
 * and nothing waits on it), so a reload of a large table after a prune
 * stalls no ingest loop and no flush; the ingest workers at start, and
 * later only when it has not been done for SERIES_REGISTRY_GRACE_MS;
 * machpay.ingest() and buffer_ingest() themselves, in their transaction.
 * Writers never load it (a flush, and the intents it carries, must not
 * wait for a read of the whole table).
 *
 * When the registry is full (machpay.series_registry_size), an event with
 * a series it cannot hold is refused (too_large), since nothing tells
 * whether that series is new; when it has not been loaded yet, the ingest
 * workers answer 503 to requests with metric rows.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "buffer/series_registry.h"
#include "common/machpay.h"
#include "common/stats.h"

#define REGISTRY_TRANCHE		"machpay series registry"
#define ENTITY_KEY_BIT			(UINT64CONST(1) << 63)
/* A load that has not finished in this time is taken over. */
#define LOADER_TIMEOUT_MS		60000
#define LOAD_FETCH_ROWS			10000
#define REFRESH_CHECK_MS		100

typedef enum SeriesState
{
	SERIES_RESERVED,			/* admitted, not committed by a writer yet */
	SERIES_KNOWN,				/* in machpay.metric_series */
} SeriesState;

typedef struct SeriesSlot
{
	uint64		key;			/* hash key: the series identity's hash */
	uint64		entity;			/* its entity's key */
	TimestampTz stamp;			/* reserved: when reserved or last written */
	uint32		generation;		/* known: the registry generation it became known in */
	SeriesState state;
} SeriesSlot;

typedef struct EntitySlot
{
	uint64		key;			/* hash key: the entity id's hash, top bit set */
	int32		nseries;		/* series of the registry that are its */
} EntitySlot;

typedef struct RegistryShared
{
	LWLock	   *lock;
	bool		loaded;
	bool		overflowed;		/* the last load did not fit */
	uint64		loaded_removals;	/* series_removals the load saw */
	uint32		generation;		/* moved by each load's start */
	int64		nreserved;
	TimestampTz oldest_reserved;	/* no reservation is older (when nreserved > 0) */
	int			loader_pid;
	TimestampTz loader_started;
	pg_atomic_uint64 stale_since;	/* first seen stale (removals moved); 0 = not */
} RegistryShared;

static RegistryShared *reg = NULL;
static HTAB *series_htab = NULL;
static HTAB *entity_htab = NULL;

/* Series this process's transaction resolved, confirmed at its commit. */
static uint64 *written = NULL;
static int	nwritten = 0;
static int	maxwritten = 0;
/* (subtransaction, nwritten at its start), to forget what it rolled back */
typedef struct SubxactMark
{
	SubTransactionId subid;
	int			nwritten;
} SubxactMark;
static SubxactMark *marks = NULL;
static int	nmarks = 0;
static int	maxmarks = 0;
static bool callbacks_registered = false;
/* Does this backend's database hold the workers' tables?  -1 = not known. */
static int	in_workers_database = -1;

static void refresh_in_xact(int grace_ms, bool force);
static void register_callbacks(void);

static int64
entity_capacity(void)
{
	return machpay_series_registry_size / 8 + 1024;
}

static uint32
key_hash(const void *key, Size keysize)
{
	uint64		k = *(const uint64 *) key;

	return (uint32) (k ^ (k >> 32));
}

void
series_registry_shmem_request(void)
{
	if (machpay_series_registry_size <= 0)
		return;
	RequestAddinShmemSpace(add_size(MAXALIGN(sizeof(RegistryShared)),
									add_size(hash_estimate_size(machpay_series_registry_size,
																sizeof(SeriesSlot)),
											 hash_estimate_size(entity_capacity(),
																sizeof(EntitySlot)))));
	RequestNamedLWLockTranche(REGISTRY_TRANCHE, 1);
}

/* Called with AddinShmemInitLock held. */
void
series_registry_shmem_init(void)
{
	HASHCTL		ctl;
	bool		found;

	if (machpay_series_registry_size <= 0)
		return;
	reg = ShmemInitStruct("machpay series registry", sizeof(RegistryShared), &found);
	if (!found)
	{
		memset(reg, 0, sizeof(RegistryShared));
		reg->lock = &(GetNamedLWLockTranche(REGISTRY_TRANCHE))->lock;
		pg_atomic_init_u64(&reg->stale_since, 0);
	}
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(SeriesSlot);
	ctl.hash = key_hash;
	series_htab = ShmemInitHash("machpay series registry series",
								machpay_series_registry_size, machpay_series_registry_size,
								&ctl, HASH_ELEM | HASH_FUNCTION);
	ctl.entrysize = sizeof(EntitySlot);
	entity_htab = ShmemInitHash("machpay series registry entities",
								entity_capacity(), entity_capacity(),
								&ctl, HASH_ELEM | HASH_FUNCTION);
}

/* ------------------------------------------------------------------------
 * Keys
 * ------------------------------------------------------------------------
 */

static uint64
entity_key(const char *entity, uint32 len)
{
	return hash_bytes_extended((const unsigned char *) entity, (int) len, 1) | ENTITY_KEY_BIT;
}

static uint64
series_key(const char *entity, uint32 entity_len, const char *metric, uint32 metric_len,
		   const char *labels, uint32 labels_len)
{
	uint64		h = hash_bytes_extended((const unsigned char *) entity, (int) entity_len, 0);

	h = hash_combine64(h, hash_bytes_extended((const unsigned char *) metric, (int) metric_len, 0));
	h = hash_combine64(h, hash_bytes_extended((const unsigned char *) labels, (int) labels_len, 0));
	return h & ~ENTITY_KEY_BIT;
}

static int64
reservation_lifetime_us(void)
{
	return ((int64) machpay_flush_retry_window_s + 30) * USECS_PER_SEC;
}

/* ------------------------------------------------------------------------
 * Changes under the exclusive lock
 * ------------------------------------------------------------------------
 */

static void
entity_adjust(uint64 entity, int delta)
{
	EntitySlot *e = hash_search(entity_htab, &entity, HASH_FIND, NULL);

	if (e == NULL)
		return;
	e->nseries += delta;
	if (e->nseries <= 0)
		hash_search(entity_htab, &entity, HASH_REMOVE, NULL);
}

static void
note_reserved(TimestampTz now)
{
	if (reg->nreserved == 0 || now < reg->oldest_reserved)
		reg->oldest_reserved = now;
	reg->nreserved++;
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
	TimestampTz cutoff = now - reservation_lifetime_us();
	TimestampTz oldest = now;

	hash_seq_init(&seq, series_htab);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		if (s->state != SERIES_RESERVED)
			continue;
		if (s->stamp < cutoff)
		{
			entity_adjust(s->entity, -1);
			reg->nreserved--;
			hash_search(series_htab, &s->key, HASH_REMOVE, NULL);
		}
		else if (s->stamp < oldest)
			oldest = s->stamp;
	}
	reg->oldest_reserved = oldest;
}

static bool
sweep_due(TimestampTz now)
{
	return reg->nreserved > 0 &&
		now - reg->oldest_reserved > reservation_lifetime_us();
}

/* ------------------------------------------------------------------------
 * Admission
 * ------------------------------------------------------------------------
 */

/* One event's metric rows: keys[first .. first + n), sorted, deduplicated. */
typedef struct EventSeries
{
	int32		index;
	const char *entity;
	uint64		entity_key;
	int			first;
	int			n;
	int			nnew;			/* not in the registry, when refused */
	int			have;			/* the entity's series, when refused */
} EventSeries;

/* Why an event's new series were not reserved. */
typedef enum Refusal
{
	REFUSAL_NONE,
	REFUSAL_LIMIT,				/* past machpay.max_series_per_entity */
	REFUSAL_FULL,				/* the registry cannot count them */
} Refusal;

static int
key_cmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/* The metric rows of result, by event. */
static int
collect_events(const MapResult *result, EventSeries **events_out, uint64 **keys_out)
{
	uint64	   *keys = palloc(sizeof(uint64) * Max(result->nrows[ROW_METRIC], 1));
	int			maxevents = Max(result->accepted, 1);
	EventSeries *events = palloc(sizeof(EventSeries) * maxevents);
	int			nevents = 0;
	int			nkeys = 0;
	RowReader	rd;
	RowView		row;

	rowbuf_reader_init(&rd, result->rows.data, result->rows.len);
	while (rowbuf_next(&rd, &row))
	{
		EventSeries *ev;

		if (row.kind != ROW_METRIC || row.nstrings < 3)
			continue;
		ev = nevents > 0 ? &events[nevents - 1] : NULL;
		if (ev == NULL || ev->index != row.event_index)
		{
			if (nevents == maxevents)
			{
				maxevents *= 2;
				events = repalloc(events, sizeof(EventSeries) * maxevents);
			}
			ev = &events[nevents++];
			ev->index = row.event_index;
			ev->entity = row.str[0];
			ev->entity_key = entity_key(row.str[0], row.len[0]);
			ev->first = nkeys;
			ev->n = 0;
			ev->nnew = 0;
		}
		keys[nkeys++] = series_key(row.str[0], row.len[0], row.str[1], row.len[1],
								   row.str[2], row.len[2]);
		ev->n++;
	}
	for (int i = 0; i < nevents; i++)
	{
		EventSeries *ev = &events[i];
		uint64	   *k = keys + ev->first;
		int			m = 0;

		qsort(k, ev->n, sizeof(uint64), key_cmp);
		for (int j = 0; j < ev->n; j++)
			if (m == 0 || k[j] != k[m - 1])
				k[m++] = k[j];
		ev->n = m;
	}
	*events_out = events;
	*keys_out = keys;
	return nevents;
}

static int
count_new(const EventSeries *ev, const uint64 *keys)
{
	int			n = 0;

	for (int j = 0; j < ev->n; j++)
		if (hash_search(series_htab, &keys[ev->first + j], HASH_FIND, NULL) == NULL)
			n++;
	return n;
}

/*
 * Under the exclusive lock (so nothing here may fail): reserve the event's
 * new series, or say why not.
 */
static Refusal
reserve_event(EventSeries *ev, const uint64 *keys, int limit, TimestampTz now)
{
	int			nnew = count_new(ev, keys);
	EntitySlot *e;
	int			have;
	bool		found;

	if (nnew == 0)
		return REFUSAL_NONE;
	e = hash_search(entity_htab, &ev->entity_key, HASH_FIND, NULL);
	have = e ? e->nseries : 0;
	ev->nnew = nnew;
	ev->have = have;
	if ((int64) have + nnew > limit)
		return REFUSAL_LIMIT;
	if (reg->overflowed ||
		hash_get_num_entries(series_htab) + nnew > machpay_series_registry_size ||
		(e == NULL && hash_get_num_entries(entity_htab) >= entity_capacity()))
		return REFUSAL_FULL;

	e = hash_search(entity_htab, &ev->entity_key, HASH_ENTER, &found);
	if (!found)
		e->nseries = 0;
	for (int j = 0; j < ev->n; j++)
	{
		SeriesSlot *s = hash_search(series_htab, &keys[ev->first + j], HASH_ENTER, &found);

		if (found)
			continue;
		s->entity = ev->entity_key;
		s->stamp = now;
		s->generation = 0;
		s->state = SERIES_RESERVED;
		e->nseries++;
		note_reserved(now);
	}
	return REFUSAL_NONE;
}

static char *
refusal_message(const EventSeries *ev, Refusal why, int limit)
{
	if (why == REFUSAL_LIMIT)
		return psprintf("entity %s has %d metric series; the %d new series of this event would pass machpay.max_series_per_entity (%d)",
						ev->entity, ev->have, ev->nnew, limit);
	return psprintf("the series registry is full: %d new metric series of entity %s cannot be counted against machpay.max_series_per_entity; raise machpay.series_registry_size",
					ev->nnew, ev->entity);
}

static bool
workers_database(void)
{
	if (in_workers_database < 0)
	{
		char	   *name;

		if (!IsTransactionState())
			return true;		/* a worker, connected to machpay.database */
		name = get_database_name(MyDatabaseId);
		in_workers_database = (name != NULL && strcmp(name, machpay_database) == 0) ? 1 : 0;
	}
	return in_workers_database == 1;
}

bool
series_registry_admit(MapResult *result, const MapOptions *opts)
{
	int			limit = machpay_max_series_per_entity;
	EventSeries *events;
	uint64	   *keys;
	int			nevents;
	int			nnew = 0;
	int32	   *rejected;
	char	  **messages;
	Refusal    *why;
	int			nrejected = 0;
	TimestampTz now;

	/* On a standby nothing is stored: the write refuses it, not this. */
	if (reg == NULL || limit <= 0 || result->status != MAP_OK ||
		result->nrows[ROW_METRIC] == 0 || RecoveryInProgress() || !workers_database())
		return true;
	/* A SQL caller loads it itself rather than wait for a worker. */
	if (IsTransactionState())
	{
		register_callbacks();
		refresh_in_xact(0, true);
	}

	nevents = collect_events(result, &events, &keys);

	LWLockAcquire(reg->lock, LW_SHARED);
	if (!reg->loaded)
	{
		LWLockRelease(reg->lock);
		if (IsTransactionState())
			ereport(ERROR,
					(errcode(ERRCODE_CANNOT_CONNECT_NOW),
					 errmsg("machpay series registry is not loaded"),
					 errdetail("Nothing of this payload was stored."),
					 errhint("Retry.")));
		return false;
	}
	for (int i = 0; i < nevents && nnew == 0; i++)
		nnew += count_new(&events[i], keys);
	LWLockRelease(reg->lock);
	if (nnew == 0)
		return true;			/* every series known or reserved */

	rejected = palloc(sizeof(int32) * nevents);
	messages = palloc(sizeof(char *) * nevents);
	why = palloc(sizeof(Refusal) * nevents);
	now = GetCurrentTimestamp();
	LWLockAcquire(reg->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nevents; i++)
		why[i] = reserve_event(&events[i], keys, limit, now);
	LWLockRelease(reg->lock);

	for (int i = 0; i < nevents; i++)
	{
		if (why[i] == REFUSAL_NONE)
			continue;
		rejected[nrejected] = events[i].index;
		messages[nrejected++] = refusal_message(&events[i], why[i], limit);
	}

	if (nrejected > 0)
	{
		stats_add(STAT_EVENTS_SERIES_LIMIT, nrejected);
		map_reject_events(result, opts, rejected, nrejected, MAP_ERR_TOO_LARGE,
						  (const char *const *) messages);
	}
	return true;
}

bool
series_registry_ready(void)
{
	bool		loaded;

	if (reg == NULL || machpay_max_series_per_entity <= 0)
		return true;
	LWLockAcquire(reg->lock, LW_SHARED);
	loaded = reg->loaded;
	LWLockRelease(reg->lock);
	return loaded;
}

/* ------------------------------------------------------------------------
 * What the writers resolved
 * ------------------------------------------------------------------------
 */

static void
registry_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			/* prepared: known unless rolled back, which only overcounts */
			if (nwritten > 0 && reg != NULL)
			{
				LWLockAcquire(reg->lock, LW_EXCLUSIVE);
				for (int i = 0; i < nwritten; i++)
				{
					SeriesSlot *s = hash_search(series_htab, &written[i], HASH_FIND, NULL);

					if (s != NULL && s->state == SERIES_RESERVED)
					{
						s->state = SERIES_KNOWN;
						s->generation = reg->generation;
						reg->nreserved--;
					}
				}
				LWLockRelease(reg->lock);
			}
			nwritten = 0;
			nmarks = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* stays reserved: counted until written again or swept */
			nwritten = 0;
			nmarks = 0;
			break;
		default:
			break;
	}
}

static void
registry_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	switch (event)
	{
		case SUBXACT_EVENT_START_SUB:
			if (nmarks == maxmarks)
			{
				maxmarks = Max(8, maxmarks * 2);
				marks = marks ? repalloc(marks, sizeof(SubxactMark) * maxmarks)
					: MemoryContextAlloc(TopMemoryContext, sizeof(SubxactMark) * maxmarks);
			}
			marks[nmarks].subid = mySubid;
			marks[nmarks++].nwritten = nwritten;
			break;
		case SUBXACT_EVENT_COMMIT_SUB:
		case SUBXACT_EVENT_ABORT_SUB:
			while (nmarks > 0 && marks[nmarks - 1].subid >= mySubid)
			{
				nmarks--;
				if (event == SUBXACT_EVENT_ABORT_SUB && marks[nmarks].subid == mySubid)
					nwritten = Min(nwritten, marks[nmarks].nwritten);
			}
			break;
		default:
			break;
	}
}

/*
 * Registered on the first admission in a transaction or the first written
 * series, whichever comes first, so a subtransaction that writes series is
 * seen starting.
 */
static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(registry_xact_callback, NULL);
	RegisterSubXactCallback(registry_subxact_callback, NULL);
	callbacks_registered = true;
}

void
series_registry_note_written(const char *entity, uint32 entity_len,
							 const char *metric, uint32 metric_len,
							 const char *labels, uint32 labels_len)
{
	uint64		key;
	uint64		ekey;
	SeriesSlot *s;
	bool		found;
	TimestampTz now = GetCurrentTimestamp();

	if (reg == NULL || !workers_database())
		return;
	register_callbacks();
	key = series_key(entity, entity_len, metric, metric_len, labels, labels_len);
	ekey = entity_key(entity, entity_len);

	LWLockAcquire(reg->lock, LW_EXCLUSIVE);
	s = hash_search(series_htab, &key, HASH_FIND, NULL);
	if (s == NULL && hash_get_num_entries(series_htab) < machpay_series_registry_size)
	{
		EntitySlot *e = hash_search(entity_htab, &ekey, HASH_ENTER_NULL, &found);

		if (e != NULL)
		{
			if (!found)
				e->nseries = 0;
			s = hash_search(series_htab, &key, HASH_ENTER, &found);
			s->entity = ekey;
			s->generation = 0;
			s->state = SERIES_RESERVED;
			s->stamp = now;
			e->nseries++;
			note_reserved(now);
		}
	}
	if (s != NULL && s->state == SERIES_RESERVED)
		s->stamp = now;			/* being written: its lifetime starts again */
	LWLockRelease(reg->lock);

	if (s == NULL)
		return;
	if (nwritten == maxwritten)
	{
		maxwritten = Max(256, maxwritten * 2);
		written = written ? repalloc(written, sizeof(uint64) * maxwritten)
			: MemoryContextAlloc(TopMemoryContext, sizeof(uint64) * maxwritten);
	}
	written[nwritten++] = key;
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
			out[n].key = series_key(VARDATA_ANY(t[0]), VARSIZE_ANY_EXHDR(t[0]),
									VARDATA_ANY(t[1]), VARSIZE_ANY_EXHDR(t[1]),
									VARDATA_ANY(t[2]), VARSIZE_ANY_EXHDR(t[2]));
			out[n].entity = entity_key(VARDATA_ANY(t[0]), VARSIZE_ANY_EXHDR(t[0]));
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
	TimestampTz cutoff = now - reservation_lifetime_us();

	for (int64 i = 0; i < n; i++)
	{
		bool		found;

		s = hash_search(series_htab, &loaded[i].key, HASH_FIND, NULL);
		if (s == NULL)
		{
			if (hash_get_num_entries(series_htab) >= machpay_series_registry_size)
			{
				overflow = true;
				continue;
			}
			s = hash_search(series_htab, &loaded[i].key, HASH_ENTER, &found);
			s->entity = loaded[i].entity;
		}
		s->state = SERIES_KNOWN;
		s->generation = gen;
	}

	reg->nreserved = 0;
	reg->oldest_reserved = now;
	hash_seq_init(&seq, series_htab);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		bool		drop = s->state == SERIES_KNOWN
			? s->generation < gen
			: s->stamp < cutoff;

		if (drop)
			hash_search(series_htab, &s->key, HASH_REMOVE, NULL);
		else if (s->state == SERIES_RESERVED)
			note_reserved(s->stamp);
	}

	hash_seq_init(&seq, entity_htab);
	while ((e = hash_seq_search(&seq)) != NULL)
		hash_search(entity_htab, &e->key, HASH_REMOVE, NULL);
	hash_seq_init(&seq, series_htab);
	while ((s = hash_seq_search(&seq)) != NULL)
	{
		bool		found;

		e = hash_search(entity_htab, &s->entity, HASH_ENTER_NULL, &found);
		if (e == NULL)
		{
			overflow = true;
			continue;
		}
		if (!found)
			e->nseries = 0;
		e->nseries++;
	}
	reg->overflowed = overflow;
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

	LWLockAcquire(reg->lock, LW_EXCLUSIVE);
	if (!force && reg->loader_pid != 0 && reg->loader_pid != MyProcPid &&
		!TimestampDifferenceExceeds(reg->loader_started, now, LOADER_TIMEOUT_MS))
	{
		LWLockRelease(reg->lock);
		return;					/* another process is loading it */
	}
	reg->loader_pid = MyProcPid;
	reg->loader_started = now;
	gen = ++reg->generation;
	removals = stats_get(STAT_SERIES_REMOVALS);
	LWLockRelease(reg->lock);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "machpay series registry load",
								ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		loaded = read_table(&n);
	}
	PG_CATCH();
	{
		LWLockAcquire(reg->lock, LW_EXCLUSIVE);
		if (reg->loader_pid == MyProcPid)
			reg->loader_pid = 0;
		LWLockRelease(reg->lock);
		PG_RE_THROW();
	}
	PG_END_TRY();

	locked_at = GetCurrentTimestamp();
	LWLockAcquire(reg->lock, LW_EXCLUSIVE);
	rebuild_locked(loaded, n, gen, GetCurrentTimestamp());
	reg->loaded = true;
	reg->loaded_removals = removals;
	if (removals == stats_get(STAT_SERIES_REMOVALS))
		pg_atomic_write_u64(&reg->stale_since, 0);
	if (reg->loader_pid == MyProcPid)
		reg->loader_pid = 0;
	LWLockRelease(reg->lock);
	unlocked_at = GetCurrentTimestamp();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);

	ereport(LOG,
			(errmsg("machpay series registry loaded " INT64_FORMAT " series in %ld ms (%ld ms of it exclusive)",
					n, (long) ((unlocked_at - now) / 1000),
					(long) ((unlocked_at - locked_at) / 1000))));
	if (reg->overflowed)
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

	LWLockAcquire(reg->lock, LW_SHARED);
	loaded = reg->loaded;
	stale = reg->loaded_removals != stats_get(STAT_SERIES_REMOVALS);
	*sweep = sweep_due(now);
	LWLockRelease(reg->lock);
	if (!loaded)
		return true;
	if (!stale)
		return false;
	since = pg_atomic_read_u64(&reg->stale_since);
	if (since == 0)
	{
		uint64		zero = 0;

		if (pg_atomic_compare_exchange_u64(&reg->stale_since, &zero, (uint64) now))
			since = (uint64) now;
		else
			since = zero;
	}
	return now - (TimestampTz) since >= (int64) grace_ms * 1000;
}

static void
sweep(void)
{
	LWLockAcquire(reg->lock, LW_EXCLUSIVE);
	if (sweep_due(GetCurrentTimestamp()))
		sweep_locked(GetCurrentTimestamp());
	LWLockRelease(reg->lock);
}

/* The extension may have been dropped under a worker: then nothing to load. */
static bool
table_exists(void)
{
	Oid			nsp = get_namespace_oid(MACHPAY_SCHEMA, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("metric_series", nsp));
}

static void
refresh_in_xact(int grace_ms, bool force)
{
	bool		sweeping;

	if (reg == NULL || RecoveryInProgress() || !workers_database() || !table_exists())
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
	if (reg == NULL || !TimestampDifferenceExceeds(last_check, now, REFRESH_CHECK_MS))
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
		refresh_in_xact(grace_ms, false);
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
