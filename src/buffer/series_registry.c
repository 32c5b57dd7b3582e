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
 *  - a reload (series_registry_load.c) only drops what the table no longer
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

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "buffer/series_registry_int.h"
#include "common/machpay.h"
#include "common/stats.h"

#define REGISTRY_TRANCHE		"machpay series registry"
#define ENTITY_KEY_BIT			(UINT64CONST(1) << 63)

RegistryShared *registry = NULL;
HTAB	   *registry_series = NULL;
HTAB	   *registry_entities = NULL;

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

static void register_callbacks(void);

int64
registry_entity_capacity(void)
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
											 hash_estimate_size(registry_entity_capacity(),
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
	registry = ShmemInitStruct("machpay series registry", sizeof(RegistryShared), &found);
	if (!found)
	{
		memset(registry, 0, sizeof(RegistryShared));
		registry->lock = &(GetNamedLWLockTranche(REGISTRY_TRANCHE))->lock;
		pg_atomic_init_u64(&registry->stale_since, 0);
	}
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(SeriesSlot);
	ctl.hash = key_hash;
	registry_series = ShmemInitHash("machpay series registry series",
								machpay_series_registry_size, machpay_series_registry_size,
								&ctl, HASH_ELEM | HASH_FUNCTION);
	ctl.entrysize = sizeof(EntitySlot);
	registry_entities = ShmemInitHash("machpay series registry entities",
								registry_entity_capacity(), registry_entity_capacity(),
								&ctl, HASH_ELEM | HASH_FUNCTION);
}

/* ------------------------------------------------------------------------
 * Keys
 * ------------------------------------------------------------------------
 */

uint64
registry_entity_key(const char *entity, uint32 len)
{
	return hash_bytes_extended((const unsigned char *) entity, (int) len, 1) | ENTITY_KEY_BIT;
}

uint64
registry_series_key(const char *entity, uint32 entity_len, const char *metric, uint32 metric_len,
		   const char *labels, uint32 labels_len)
{
	uint64		h = hash_bytes_extended((const unsigned char *) entity, (int) entity_len, 0);

	h = hash_combine64(h, hash_bytes_extended((const unsigned char *) metric, (int) metric_len, 0));
	h = hash_combine64(h, hash_bytes_extended((const unsigned char *) labels, (int) labels_len, 0));
	return h & ~ENTITY_KEY_BIT;
}

int64
registry_lifetime_us(void)
{
	return ((int64) machpay_flush_retry_window_s + 30) * USECS_PER_SEC;
}

void
registry_note_reserved(TimestampTz now)
{
	if (registry->nreserved == 0 || now < registry->oldest_reserved)
		registry->oldest_reserved = now;
	registry->nreserved++;
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
			ev->entity_key = registry_entity_key(row.str[0], row.len[0]);
			ev->first = nkeys;
			ev->n = 0;
			ev->nnew = 0;
		}
		keys[nkeys++] = registry_series_key(row.str[0], row.len[0], row.str[1], row.len[1],
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
		if (hash_search(registry_series, &keys[ev->first + j], HASH_FIND, NULL) == NULL)
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
	e = hash_search(registry_entities, &ev->entity_key, HASH_FIND, NULL);
	have = e ? e->nseries : 0;
	ev->nnew = nnew;
	ev->have = have;
	if ((int64) have + nnew > limit)
		return REFUSAL_LIMIT;
	if (registry->overflowed ||
		hash_get_num_entries(registry_series) + nnew > machpay_series_registry_size ||
		(e == NULL && hash_get_num_entries(registry_entities) >= registry_entity_capacity()))
		return REFUSAL_FULL;

	e = hash_search(registry_entities, &ev->entity_key, HASH_ENTER, &found);
	if (!found)
		e->nseries = 0;
	for (int j = 0; j < ev->n; j++)
	{
		SeriesSlot *s = hash_search(registry_series, &keys[ev->first + j], HASH_ENTER, &found);

		if (found)
			continue;
		s->entity = ev->entity_key;
		s->stamp = now;
		s->generation = 0;
		s->state = SERIES_RESERVED;
		e->nseries++;
		registry_note_reserved(now);
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

bool
registry_workers_database(void)
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
	if (registry == NULL || limit <= 0 || result->status != MAP_OK ||
		result->nrows[ROW_METRIC] == 0 || RecoveryInProgress() || !registry_workers_database())
		return true;
	/* A SQL caller loads it itself rather than wait for a worker. */
	if (IsTransactionState())
	{
		register_callbacks();
		registry_refresh_in_xact(0, true);
	}

	nevents = collect_events(result, &events, &keys);

	LWLockAcquire(registry->lock, LW_SHARED);
	if (!registry->loaded)
	{
		LWLockRelease(registry->lock);
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
	LWLockRelease(registry->lock);
	if (nnew == 0)
		return true;			/* every series known or reserved */

	rejected = palloc(sizeof(int32) * nevents);
	messages = palloc(sizeof(char *) * nevents);
	why = palloc(sizeof(Refusal) * nevents);
	now = GetCurrentTimestamp();
	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	for (int i = 0; i < nevents; i++)
		why[i] = reserve_event(&events[i], keys, limit, now);
	LWLockRelease(registry->lock);

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

	if (registry == NULL || machpay_max_series_per_entity <= 0)
		return true;
	LWLockAcquire(registry->lock, LW_SHARED);
	loaded = registry->loaded;
	LWLockRelease(registry->lock);
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
			if (nwritten > 0 && registry != NULL)
			{
				LWLockAcquire(registry->lock, LW_EXCLUSIVE);
				for (int i = 0; i < nwritten; i++)
				{
					SeriesSlot *s = hash_search(registry_series, &written[i], HASH_FIND, NULL);

					if (s != NULL && s->state == SERIES_RESERVED)
					{
						s->state = SERIES_KNOWN;
						s->generation = registry->generation;
						registry->nreserved--;
					}
				}
				LWLockRelease(registry->lock);
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

	if (registry == NULL || !registry_workers_database())
		return;
	register_callbacks();
	key = registry_series_key(entity, entity_len, metric, metric_len, labels, labels_len);
	ekey = registry_entity_key(entity, entity_len);

	LWLockAcquire(registry->lock, LW_EXCLUSIVE);
	s = hash_search(registry_series, &key, HASH_FIND, NULL);
	if (s == NULL && hash_get_num_entries(registry_series) < machpay_series_registry_size)
	{
		EntitySlot *e = hash_search(registry_entities, &ekey, HASH_ENTER_NULL, &found);

		if (e != NULL)
		{
			if (!found)
				e->nseries = 0;
			s = hash_search(registry_series, &key, HASH_ENTER, &found);
			s->entity = ekey;
			s->generation = 0;
			s->state = SERIES_RESERVED;
			s->stamp = now;
			e->nseries++;
			registry_note_reserved(now);
		}
	}
	if (s != NULL && s->state == SERIES_RESERVED)
		s->stamp = now;			/* being written: its lifetime starts again */
	LWLockRelease(registry->lock);

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

