/*-------------------------------------------------------------------------
 * buffer_int.h
 *	  The flusher's side of the shared-memory buffer (buffer.c): entries as
 *	  stored in the ring, taking them, posting their tickets, freeing space.
 *
 * Producers use buffer.h only.  An *entry* is one request's row batch;
 * it moves RESERVED (being copied) -> READY -> TAKEN (in a writer's batch)
 * -> DONE (committed or dropped; space freed once its ticket is released).
 * A *writer* is one flusher process; each serves one queue from its own
 * slot, and takes *runs* (consecutive ready entries) from the queue.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_BUFFER_INT_H
#define MACHPAY_BUFFER_INT_H

#include "buffer/buffer.h"

/*
 * The two queues: requests with payment intents have a region and a writer
 * of their own (so telemetry never fills their room nor delays their
 * commit); everything else goes to the telemetry queue.
 */
typedef enum BufferQueueId
{
	QUEUE_TELEMETRY = 0,
	QUEUE_INTENTS,
} BufferQueueId;

#define BUFFER_QUEUES			2
/* The intents queue gets 1/BUFFER_INTENTS_SHARE of machpay.buffer_size. */
#define BUFFER_INTENTS_SHARE	8
/* Writer slots: the intents writer and up to 64 telemetry writers. */
#define BUFFER_MAX_WRITERS		65
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

typedef enum BufferFlushNote
{
	FLUSH_NOTE_START,			/* a transaction begins */
	FLUSH_NOTE_WRITABLE,		/* it wrote (committed, or gave up only for dead tickets) */
	FLUSH_NOTE_FAILED,			/* it raised an error */
	FLUSH_NOTE_REFUSED,			/* the tables refused its rows (a data error):
								 * says nothing of the database */
} BufferFlushNote;

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

typedef struct BufferEntry
{
	uint32		kind;			/* BufferEntryKind */
	uint32		state;			/* BufferEntryState */
	Size		total;			/* bytes of the entry, header included */
	uint64		seq;
	int32		queue;			/* BufferQueueId */
	int32		taken_by;		/* writer slot once TAKEN, else -1 */
	Size		rows_len;
	int32		nevents;		/* accepted events */
	int32		nintents;		/* ROW_INTENT rows */
	int32		ticket_slot;	/* -1: none */
	uint64		ticket_generation;
	TimestampTz put_at;
	int64		events_by_source[EVENT_SOURCE_COUNT];
	int64		nrows[ROW_KIND_MAX + 1];
	/* then: IntentOutcome[nintents], MAXALIGNed; then the rows */
} BufferEntry;

#define BUFFER_ENTRY_OUTCOMES(e) \
	((IntentOutcome *) ((char *) (e) + MAXALIGN(sizeof(BufferEntry))))
#define BUFFER_ENTRY_ROWS(e) \
	((char *) (e) + MAXALIGN(sizeof(BufferEntry)) + \
	 MAXALIGN(sizeof(IntentOutcome) * (e)->nintents))

typedef void (*buffer_take_cb) (BufferEntry *entry, uint64 off, void *arg);
/* Does this process hold a lock the writer `pid` waits for? */
typedef bool (*buffer_blocks_cb) (pid_t pid);

extern int	buffer_flusher_attach(int slot, BufferQueueId queue, bool accepting,
								  buffer_take_cb take, void *arg);
extern void buffer_flusher_set_accepting(bool accepting);
extern void buffer_flusher_detach(void);
extern void buffer_begin_shutdown(void);
extern bool buffer_has_reserved(void);
extern int	buffer_take(Size max_bytes, int64 max_events, int max_entries,
						buffer_take_cb take, void *arg);
extern bool buffer_order_wait(buffer_blocks_cb blocks_writer);
extern void buffer_order_settle(void);
extern bool buffer_claim_tickets(BufferEntry **entries, int n);
extern void buffer_unclaim_tickets(BufferEntry **entries, int n);
extern bool buffer_entry_ticket_live(BufferEntry *e);
extern void buffer_entry_finish(BufferEntry *e, bool committed,
								const IntentOutcome *outcomes);
extern void buffer_advance_head(uint64 oldest_unfinished, int64 rows_written);
extern void buffer_flusher_note(BufferFlushNote note);
extern bool buffer_db_stalled(void);
extern void buffer_flusher_status(int64 *events_ready, int *intents_waiting,
								  bool *flush_requested, bool *any_pending);

/* machpay.flush() and machpay.buffer_ingest() */
extern bool buffer_request_flush(uint64 *target_seq, uint64 *rows_before);
extern bool buffer_wait_flushed(uint64 target_seq, uint64 *rows_after);

#endif							/* MACHPAY_BUFFER_INT_H */
