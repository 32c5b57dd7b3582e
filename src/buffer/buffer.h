/*-------------------------------------------------------------------------
 * buffer.h
 *	  The shared-memory buffer between the ingest workers (producers) and the
 *	  flusher's writers (consumers): row batches, whole requests at a time.
 *
 * An *entry* is the row batch of one request (BufferRows, as the producer
 * hands it in).  A request is buffered whole or not at all.  Requests that
 * carry payment intents get a *ticket*: a writer posts the intents'
 * outcomes (IntentOutcome: ids, duplicate flags) to it after the commit and
 * sets the producer's latch; the producer polls it.  A *writer* is one
 * flusher process; each serves one queue, taking *runs* (consecutive ready
 * entries) from it.  How entries lie in the rings is buffer_int.h's, which
 * nothing outside this folder includes.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_BUFFER_H
#define MACHPAY_BUFFER_H

#include "access/xlogdefs.h"
#include "mapper/rowbuf.h"

/*
 * The outcome of one stored intent, in the order of the batch's ROW_INTENT
 * rows: written by the writer, carried back to the producer by the ticket.
 */
typedef struct IntentOutcome
{
	int32		event_index;
	unsigned char id[16];		/* uuid */
	bool		duplicate;
} IntentOutcome;

/* One request's rows as a producer hands them to the buffer. */
typedef struct BufferRows
{
	const char *data;			/* the row batch (rowbuf.h) */
	Size		len;
	int			nintents;		/* ROW_INTENT rows: > 0 issues a ticket */
	int64		nrows[ROW_KIND_MAX + 1];	/* rows by RowKind */
	int64		events_by_source[EVENT_SOURCE_COUNT];	/* accepted events */
} BufferRows;

typedef enum BufferPutStatus
{
	BUFFER_PUT_OK,
	BUFFER_PUT_FULL,			/* no room now: 429 + Retry-After */
	BUFFER_PUT_UNAVAILABLE,		/* no flusher / shutting down: 503 */
} BufferPutStatus;

/* Room for a request of some size, decided before its body is parsed. */
typedef enum BufferRoom
{
	BUFFER_ROOM_NONE,			/* 429 */
	BUFFER_ROOM_INTENTS_ONLY,	/* only a request with payment intents fits */
	BUFFER_ROOM_ANY,
} BufferRoom;

typedef enum TicketState
{
	TICKET_PENDING,				/* not committed yet */
	TICKET_COMMITTED,			/* outcomes available */
	TICKET_FAILED,				/* could not be committed: 503 */
} TicketState;

typedef struct BufferTicket
{
	int			slot;			/* ticket slot in shared memory */
	uint64		generation;		/* guards against slot reuse */
} BufferTicket;

/* Producer side (ingest workers, machpay.buffer_ingest()). */
extern bool buffer_available(void);	/* in shared_preload_libraries */
extern bool buffer_accepting(void);	/* a flusher is attached, not shutting down */
extern bool buffer_shutting_down(void);	/* the writers began their last flush */
extern bool buffer_has_room(Size bytes);	/* cheap pre-check before parsing */
extern BufferRoom buffer_room(Size bytes);	/* the same, intents-aware */
extern BufferPutStatus buffer_put(const BufferRows *rows, BufferTicket *ticket);
extern TicketState buffer_ticket_poll(const BufferTicket *ticket,
									  IntentOutcome *outcomes, int noutcomes);
extern void buffer_ticket_release(const BufferTicket *ticket);

/* Gauges for /metrics and /readyz. */
extern Size buffer_bytes_used(void);
extern Size buffer_capacity(void);
extern int	buffer_intents_waiting(void);
extern bool buffer_db_stalled(void);	/* flushes failing or stuck: not writable */

/* ---------------------------------------------------------------------
 * Writer side (the flusher)
 * ---------------------------------------------------------------------
 */

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

/* Writer slots: the intents writer and up to 64 telemetry writers. */
#define BUFFER_MAX_WRITERS		65

typedef enum BufferFlushNote
{
	FLUSH_NOTE_START,			/* a transaction begins */
	FLUSH_NOTE_WRITABLE,		/* it wrote (committed, or gave up only for dead tickets) */
	FLUSH_NOTE_FAILED,			/* it raised an error */
	FLUSH_NOTE_REFUSED,			/* the tables refused its rows (a data error):
								 * says nothing of the database */
} BufferFlushNote;

/*
 * An entry as a writer sees it: the header of its place in the ring (the
 * fields a writer reads: seq, rows_len, nevents, nintents, put_at and the
 * counts), its rows at BUFFER_ENTRY_ROWS().  A writer never sets a field:
 * the buffer's functions move an entry through its states.
 */
typedef struct BufferEntry
{
	uint32		kind;			/* BufferEntryKind (buffer_int.h) */
	uint32		state;			/* BufferEntryState (buffer_int.h) */
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
	XLogRecPtr	done_lsn;		/* its space is freed once WAL is flushed this far */
	int64		events_by_source[EVENT_SOURCE_COUNT];
	int64		nrows[ROW_KIND_MAX + 1];
	/* then: IntentOutcome[nintents], MAXALIGNed; then the rows */
} BufferEntry;

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

/*
 * A writer's own copy of a taken entry that keeps only `rows` (its
 * telemetry: no intents, no ticket), for retrying it after the ring's
 * entry is finished.  Allocated in TopMemoryContext; the writer pfrees it.
 */
extern BufferEntry *buffer_entry_copy_telemetry(const BufferEntry *e,
												const char *rows, Size rows_len);
extern void buffer_entry_finish_at_lsn(BufferEntry *e, XLogRecPtr commit_end);
extern void buffer_advance_head(uint64 oldest_unfinished, int64 rows_written);
extern void buffer_flusher_note(BufferFlushNote note);
extern void buffer_flusher_status(int64 *events_ready, int *intents_waiting,
								  bool *flush_requested, bool *any_pending);

#endif							/* MACHPAY_BUFFER_H */
