/*-------------------------------------------------------------------------
 * series_cache.h
 *	  The per-process map (entity_id, metric_name, labels text) -> series_id
 *	  of machpay.metric_series.
 *
 * A *series* is one (entity, metric, label set); its points are the narrow
 * rows of machpay.metric_points.  The writer looks every metric row up with
 * series_cache_lookup(), then resolves all misses of the batch at once with
 * series_cache_resolve() (one SQL statement; needs an SPI connection).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_SERIES_CACHE_H
#define MACHPAY_SERIES_CACHE_H

typedef struct SeriesEntry SeriesEntry;

/* Call once per batch before any lookup: validates the cache. */
extern void series_cache_begin_batch(void);

/*
 * The entry of a series; a new entry is queued for resolution.  The
 * pointer stays valid until the end of the batch.
 */
extern SeriesEntry *series_cache_lookup(const char *entity_id, uint32 entity_len,
										const char *metric_name, uint32 metric_len,
										const char *labels, uint32 labels_len);

/* Resolves every queued entry (INSERT ... ON CONFLICT DO NOTHING + SELECT). */
extern void series_cache_resolve(void);

/* The series id; SERIES_REFUSED for a new series past the entity's limit. */
#define SERIES_REFUSED		(-1)
extern int64 series_entry_id(const SeriesEntry *entry);

#endif							/* MACHPAY_SERIES_CACHE_H */
