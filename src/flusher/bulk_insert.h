/*-------------------------------------------------------------------------
 * bulk_insert.h
 *	  Bulk insertion of rows into one (partitioned) table the way COPY FROM
 *	  does it: partition routing, per-partition buffers of slots flushed
 *	  with table_multi_insert, index insertion, constraint checks.
 *
 * A *target* is one root table for the duration of one batch.  The caller
 * fills the root-shaped slot returned by bulk_target_slot() and calls
 * bulk_target_put(); bulk_target_finish() flushes what is left.  Everything
 * runs in the caller's transaction.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_BULK_INSERT_H
#define MACHPAY_BULK_INSERT_H

#include "executor/tuptable.h"

typedef struct BulkTarget BulkTarget;

/* Opens machpay.<relname> for insertion (RowExclusiveLock, held to commit). */
extern BulkTarget *bulk_target_open(const char *relname);

/* Attribute number (1-based) of a column of the root table; errors if absent. */
extern AttrNumber bulk_target_attnum(BulkTarget *bt, const char *colname);

/*
 * The root-shaped slot to fill: cleared, all columns NULL.  Values must stay
 * valid until the next bulk_target_put() returns.
 */
extern TupleTableSlot *bulk_target_slot(BulkTarget *bt);

/* Routes and buffers the filled slot; `event_index` is for error context. */
extern void bulk_target_put(BulkTarget *bt, int32 event_index);

/* Flushes every buffer, fires AFTER triggers, frees everything; returns rows. */
extern int64 bulk_target_finish(BulkTarget *bt);

/*
 * This process flushes its own WAL every `bytes` of it while it inserts
 * in a transaction that commits durably (0, the default: never before the
 * commit).
 */
extern void bulk_insert_set_wal_step(Size bytes);

#endif							/* MACHPAY_BULK_INSERT_H */
