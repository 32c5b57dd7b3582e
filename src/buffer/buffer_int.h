/*-------------------------------------------------------------------------
 * buffer_int.h
 *	  The buffer's own view of its rings (buffer.c, buffer_sql.c): how an
 *	  entry lies in a ring, its states, and the buffer's timing limits.
 *
 * Nothing outside src/buffer/ includes this file (make check-layout fails
 * the build otherwise): producers and writers use buffer.h.  An entry
 * moves RESERVED (being copied) -> READY -> TAKEN (in a writer's batch)
 * -> DONE (committed or dropped; space freed once its ticket is released).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_BUFFER_INT_H
#define MACHPAY_BUFFER_INT_H

#include "buffer/buffer.h"

#define BUFFER_QUEUES			2
/* The intents queue gets 1/BUFFER_INTENTS_SHARE of machpay.buffer_size. */
#define BUFFER_INTENTS_SHARE	8
/* Longest a writer waits for an earlier run's commit (buffer_order_wait). */
#define BUFFER_ORDER_WAIT_MS	5000

/* How long a request's payment intents may wait for their commit. */
#define BUFFER_INTENT_WAIT_MS	5000

/*
 * /readyz says the database is not writable once flushes have been failing
 * (or one has been stuck) this long, and keeps saying so until a commit or
 * until no attempt failed for BUFFER_FAILURE_MEMORY_MS.
 */
#define BUFFER_STALL_MS			3000
#define BUFFER_FAILURE_MEMORY_MS 10000

typedef enum BufferEntryKind
{
	ENTRY_ROWS = 1,
	ENTRY_WRAP,					/* skipped tail of the ring */
} BufferEntryKind;

typedef enum BufferEntryState
{
	ENTRY_RESERVED = 1,
	ENTRY_READY,
	ENTRY_TAKEN,
	ENTRY_DONE,
} BufferEntryState;

#define BUFFER_ENTRY_OUTCOMES(e) \
	((IntentOutcome *) ((char *) (e) + MAXALIGN(sizeof(BufferEntry))))

/* machpay.flush() (buffer_sql.c) */
extern bool buffer_request_flush(uint64 *target_seq, uint64 *rows_before);
extern bool buffer_wait_flushed(uint64 target_seq, uint64 *rows_after);

#endif							/* MACHPAY_BUFFER_INT_H */
