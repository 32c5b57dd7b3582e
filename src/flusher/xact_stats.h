/*-------------------------------------------------------------------------
 * xact_stats.h
 *	  Counters (stats.h) bumped only when the transaction that did the
 *	  work commits.
 *
 * The writer counts rows it stores; a flush that fails and is retried, or
 * a machpay.ingest() that is rolled back, must not count them twice.
 * Counts made in a subtransaction that rolls back are dropped with it.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_XACT_STATS_H
#define MACHPAY_XACT_STATS_H

#include "common/stats.h"

extern void xact_stats_add(StatCounter counter, int64 n);

#endif							/* MACHPAY_XACT_STATS_H */
