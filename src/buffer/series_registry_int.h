/*-------------------------------------------------------------------------
 * series_registry_int.h
 *	  What the two files of the series registry share: its shared state
 *	  (series_registry.c: shared memory, admission, what writers report;
 *	  series_registry_load.c: loading from machpay.metric_series, dropping
 *	  stale reservations).  Words as in series_registry.h.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_SERIES_REGISTRY_INT_H
#define MACHPAY_SERIES_REGISTRY_INT_H

#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/hsearch.h"

#include "buffer/series_registry.h"

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

extern RegistryShared *registry;
extern HTAB *registry_series;
extern HTAB *registry_entities;

extern int64 registry_entity_capacity(void);
extern uint64 registry_entity_key(const char *entity, uint32 len);
extern uint64 registry_series_key(const char *entity, uint32 entity_len,
								  const char *metric, uint32 metric_len,
								  const char *labels, uint32 labels_len);
/* How long a reservation counts without a writer's report. */
extern int64 registry_lifetime_us(void);
/* Under the exclusive lock: one more reservation, made at now. */
extern void registry_note_reserved(TimestampTz now);
extern bool registry_workers_database(void);
/* In a transaction: load if due (force: even while another process loads). */
extern void registry_refresh_in_xact(int grace_ms, bool force);

#endif							/* MACHPAY_SERIES_REGISTRY_INT_H */
