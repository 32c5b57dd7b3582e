/*-------------------------------------------------------------------------
 * commit_counter.h
 *	  Shared counters that move when a transaction commits, for caches in
 *	  other processes that must reload what it changed.
 *
 * A trigger on a table that other processes cache (machpay.ingest_keys,
 * machpay.metric_series) calls commit_counter_bump_at_commit(); the counter
 * moves once the transaction is committed and visible to new snapshots,
 * and before its locks are released.  A process that sees the counter
 * move and then reads the table sees the change: one reload is enough,
 * however long the changing transaction took.  PREPARE TRANSACTION of such
 * a transaction is refused (its commit would happen elsewhere, unseen).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_COMMIT_COUNTER_H
#define MACHPAY_COMMIT_COUNTER_H

#include "common/stats.h"

extern void commit_counter_bump_at_commit(StatCounter counter, const char *table);

#endif							/* MACHPAY_COMMIT_COUNTER_H */
