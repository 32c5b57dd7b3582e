/*-------------------------------------------------------------------------
 * buffer_int.h
 *	  The flusher's side of the shared-memory buffer (buffer.c): entries as
 *	  stored in the ring, taking them, posting their tickets, freeing space.
 *
 * Producers use buffer.h only.  An *entry* is one request's row batch;
 * it moves RESERVED (being copied) -> READY -> TAKEN (in a flusher batch)
 * -> DONE (committed or dropped; space freed once its ticket is released).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_BUFFER_INT_H
#define MACHPAY_BUFFER_INT_H

#include "buffer/buffer.h"

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

extern bool buffer_available(void);
extern uint64 buffer_flusher_attach(bool accepting);
extern void buffer_flusher_set_accepting(bool accepting);
extern void buffer_flusher_detach(void);
extern void buffer_begin_shutdown(void);
extern bool buffer_has_reserved(uint64 from);
extern int	buffer_take(uint64 *pos, Size max_bytes, int64 max_events,
						buffer_take_cb take, void *arg);
extern bool buffer_claim_tickets(BufferEntry **entries, int n);
extern void buffer_unclaim_tickets(BufferEntry **entries, int n);
extern bool buffer_entry_ticket_live(BufferEntry *e);
extern void buffer_entry_finish(BufferEntry *e, bool committed,
								const IntentOutcome *outcomes);
extern void buffer_advance_head(uint64 limit, uint64 next_seq, int64 rows_written);
extern uint64 buffer_seq_at(uint64 pos);
extern void buffer_flusher_note(BufferFlushNote note);
extern bool buffer_db_stalled(void);
extern void buffer_flusher_status(int64 *events_ready, int *intents_waiting,
								  bool *flush_requested, bool *any_pending);

/* machpay.flush() and machpay.buffer_ingest() */
extern bool buffer_request_flush(uint64 *target_seq, uint64 *rows_before);
extern bool buffer_wait_flushed(uint64 target_seq, uint64 *rows_after);

#endif							/* MACHPAY_BUFFER_INT_H */
