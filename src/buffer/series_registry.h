/*-------------------------------------------------------------------------
 * series_registry.h
 *	  The shared-memory series registry: which metric series exist (or are
 *	  about to), and how many each entity has, so that the per-entity
 *	  limit machpay.max_series_per_entity is decided when an event is
 *	  admitted, before it is answered, and not when its batch is written.
 *
 * A *series* is one (entity, metric name, label set): the identity of
 * machpay.metric_series and of the writers' series caches.  The registry
 * keeps a 64-bit hash of it.  A series is *reserved* when an admitted
 * event brings it and no writer has committed it yet, *known* once it is
 * in the table (loaded from it, or committed by a writer).
 *
 * Producers (ingest workers, machpay.ingest(), machpay.buffer_ingest())
 * call series_registry_admit() after the mapper; writers report the
 * series they resolved; the registry is (re)loaded from the table when it
 * is empty (server start) and after series were removed (maintenance's
 * prune, a DBA's DELETE or TRUNCATE).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_SERIES_REGISTRY_H
#define MACHPAY_SERIES_REGISTRY_H

#include "mapper/mapper.h"

/*
 * Reject (per event, too_large) the accepted events of result whose new
 * series would take their entity past machpay.max_series_per_entity, or
 * that the registry has no room for; reserve the new series of the
 * others.  false: the registry is not loaded and cannot be loaded here
 * (outside a transaction); the request must be refused whole (503), as
 * nothing can tell whether its series are new.  In a transaction (the
 * SQL functions) the registry is loaded here if need be, and an ERROR is
 * raised in that case instead.
 */
extern bool series_registry_admit(MapResult *result, const MapOptions *opts);

/*
 * Load the registry when it is empty or series were removed since its
 * load (the latter only once it has been so for grace_ms), and drop
 * reservations no writer confirmed in time.  Called outside a
 * transaction: it starts its own when a load is due, and reports a
 * failure to the log without raising it.  The
 * maintenance worker calls it every SERIES_REGISTRY_CHECK_MS with no
 * grace: it is the one that reloads after a prune; the ingest workers
 * step in after SERIES_REGISTRY_GRACE_MS (or at start).
 */
#define SERIES_REGISTRY_CHECK_MS	1000
#define SERIES_REGISTRY_GRACE_MS	5000
extern void series_registry_refresh(int grace_ms);

/* Can admission decide (loaded, or no limit to decide)?  For /readyz. */
extern bool series_registry_ready(void);

/*
 * A writer resolved this series (found or created it) in the current
 * transaction: known once the transaction commits.
 */
extern void series_registry_note_written(const char *entity, uint32 entity_len,
										 const char *metric, uint32 metric_len,
										 const char *labels, uint32 labels_len);

#endif							/* MACHPAY_SERIES_REGISTRY_H */
