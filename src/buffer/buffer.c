/*-------------------------------------------------------------------------
 * buffer.c
 *	  The shared-memory buffer of validated row batches between the ingest
 *	  workers (producers) and the flusher (the one consumer); see buffer.h.
 *
 * The buffer is a byte ring of *entries*, one per request: a header, room
 * for the intents' outcomes, then the request's row batch.  Positions are
 * monotonic 64-bit offsets (ring position = offset % capacity) so "used" is
 * simply reserve - head.  An entry never wraps: when it does not fit before
 * the end of the ring the tail is skipped.  A producer reserves space under
 * the spinlock, copies outside it, then marks the entry ready.  The flusher
 * takes ready entries in ring order, commits them, and frees space from the
 * head once an entry is done and its ticket (if any) has been released by
 * its producer (or abandoned).  A *ticket* is a slot through which the
 * flusher hands the intents' outcomes of one entry back to its producer.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "buffer/buffer.h"
#include "buffer/buffer_int.h"
#include "common/machpay.h"
#include "common/stats.h"

/* Concurrent requests with payment intents in flight. */
#define BUFFER_TICKETS			1024
/* A decided ticket nobody came back for is reclaimed after this long. */
#define TICKET_ABANDON_MS		60000
/*
 * Outcomes of up to this many intents are kept in the ticket itself, so
 * their entry's space is freed at commit; bigger ones stay in the ring
 * until the ticket is released.
 */
#define TICKET_INLINE_OUTCOMES	8

typedef enum TicketSlotState
{
	SLOT_FREE,
	SLOT_PENDING,
	SLOT_COMMITTED,
	SLOT_FAILED,
} TicketSlotState;

typedef struct TicketSlot
{
	TicketSlotState state;
	bool		claimed;		/* the flusher is committing it: do not expire */
	bool		released;		/* its producer left while it was claimed */
	uint64		generation;
	uint64		entry_off;		/* logical offset of its entry */
	int			nintents;
	Latch	   *producer;
	pid_t		producer_pid;
	TimestampTz deadline;		/* PENDING past this fails (unless claimed) */
	TimestampTz done_at;		/* when it became COMMITTED/FAILED */
	IntentOutcome outcomes[TICKET_INLINE_OUTCOMES];
} TicketSlot;

typedef struct BufferShared
{
	slock_t		mutex;
	Size		capacity;		/* ring bytes */
	uint64		head;			/* first byte still in use */
	uint64		reserve;		/* next byte to hand out */
	uint64		seq_next;		/* seq of the next entry */
	uint64		done_seq;		/* every entry with seq below is committed or dropped */
	int64		events_ready;	/* events in ready entries not yet taken */
	int			intents_waiting;	/* intents put, not yet committed or failed */
	bool		flusher_running;
	bool		shutdown;
	uint64		flush_target;	/* machpay.flush() wants done_seq to reach this */
	Latch	   *flusher_latch;
	pid_t		flusher_pid;
	uint64		rows_written;	/* rows committed by the flusher, ever */
	ConditionVariable flushed_cv;	/* broadcast after every flush */
	/* Is the database taking our writes?  Read by /readyz. */
	TimestampTz attempt_started;	/* a flush attempt is running since; 0 = none */
	TimestampTz failing_since;	/* first failed attempt since the last commit */
	TimestampTz last_failure;	/* end of the latest failed attempt */
	TicketSlot	tickets[BUFFER_TICKETS];
	char		ring[FLEXIBLE_ARRAY_MEMBER];
} BufferShared;

static BufferShared *buf = NULL;

#define RING_AT(off)	(buf->ring + ((off) % buf->capacity))
#define ENTRY_AT(off)	((BufferEntry *) RING_AT(off))

static Size
ring_bytes(void)
{
	return MAXALIGN((Size) machpay_buffer_size_kb * 1024);
}

Size
buffer_shmem_size(void)
{
	return add_size(MAXALIGN(offsetof(BufferShared, ring)), ring_bytes());
}

void
buffer_shmem_init(void)
{
	bool		found;

	buf = ShmemInitStruct("machpay_receiver buffer", buffer_shmem_size(), &found);
	if (!found)
	{
		memset(buf, 0, offsetof(BufferShared, ring));
		SpinLockInit(&buf->mutex);
		buf->capacity = ring_bytes();
		ConditionVariableInit(&buf->flushed_cv);
		for (int i = 0; i < BUFFER_TICKETS; i++)
			buf->tickets[i].state = SLOT_FREE;
	}
}

bool
buffer_available(void)
{
	return buf != NULL;
}

static inline Size
entry_bytes(int nintents, Size rows_len)
{
	return MAXALIGN(sizeof(BufferEntry)) +
		MAXALIGN(sizeof(IntentOutcome) * nintents) + MAXALIGN(rows_len);
}

/* Bytes skipped at the end of the ring to fit `needed` bytes at `off`. */
static inline Size
wrap_waste(uint64 off, Size needed)
{
	Size		to_end = buf->capacity - (off % buf->capacity);

	return needed > to_end ? to_end : 0;
}

/* ---------------------------------------------------------------------
 * Producer side
 * ---------------------------------------------------------------------
 */

bool
buffer_has_room(Size bytes)
{
	bool		ok;

	if (buf == NULL)
		return false;
	/* Row batches run larger than bodies only by headers; a guess is enough. */
	bytes = MAXALIGN(sizeof(BufferEntry)) + MAXALIGN(bytes);
	SpinLockAcquire(&buf->mutex);
	ok = buf->flusher_running && !buf->shutdown &&
		buf->reserve - buf->head + bytes <= buf->capacity;
	SpinLockRelease(&buf->mutex);
	return ok;
}

BufferPutStatus
buffer_put(const MapResult *result, BufferTicket *ticket)
{
	Size		rows_len = result->rows.len;
	int			nintents = result->nintents;
	Size		needed = entry_bytes(nintents, rows_len);
	Size		waste;
	uint64		off;
	uint64		seq;
	int			slot = -1;
	uint64		generation = 0;
	int			nevents = 0;
	BufferEntry *entry;
	Latch	   *wake = NULL;
	TimestampTz now = GetCurrentTimestamp();

	if (ticket)
	{
		ticket->slot = -1;
		ticket->generation = 0;
	}
	if (buf == NULL)
		return BUFFER_PUT_UNAVAILABLE;
	for (int i = 0; i < EVENT_SOURCE_COUNT; i++)
		nevents += (int) result->events_by_source[i];

	SpinLockAcquire(&buf->mutex);
	if (!buf->flusher_running || buf->shutdown)
	{
		SpinLockRelease(&buf->mutex);
		return BUFFER_PUT_UNAVAILABLE;
	}
	waste = wrap_waste(buf->reserve, needed);
	if (waste > 0 && buf->head == buf->reserve)
	{
		/* Empty: restart at the ring's beginning rather than wrap. */
		buf->reserve += waste;
		buf->head = buf->reserve;
		waste = 0;
	}
	if (needed > buf->capacity ||
		buf->reserve - buf->head + waste + needed > buf->capacity)
	{
		SpinLockRelease(&buf->mutex);
		return BUFFER_PUT_FULL;
	}
	if (nintents > 0)
	{
		/* Linear scan: the table is small and this runs once per intent request. */
		for (int i = 0; i < BUFFER_TICKETS; i++)
		{
			if (buf->tickets[i].state == SLOT_FREE)
			{
				slot = i;
				break;
			}
		}
		if (slot < 0)
		{
			SpinLockRelease(&buf->mutex);
			return BUFFER_PUT_FULL;
		}
	}
	if (waste > 0)
	{
		/* Mark the skipped tail so the flusher jumps it. */
		if (waste >= sizeof(BufferEntry))
		{
			BufferEntry *skip = ENTRY_AT(buf->reserve);

			skip->kind = ENTRY_WRAP;
			skip->state = ENTRY_DONE;
			skip->total = waste;
		}
		buf->reserve += waste;
	}
	off = buf->reserve;
	buf->reserve += needed;
	seq = buf->seq_next++;
	entry = ENTRY_AT(off);
	entry->kind = ENTRY_ROWS;
	entry->state = ENTRY_RESERVED;
	entry->seq = seq;
	entry->total = needed;
	if (slot >= 0)
	{
		TicketSlot *t = &buf->tickets[slot];

		t->state = SLOT_PENDING;
		t->claimed = false;
		t->released = false;
		t->generation++;
		t->entry_off = off;
		t->nintents = nintents;
		t->producer = MyProc ? &MyProc->procLatch : NULL;
		t->producer_pid = MyProcPid;
		t->deadline = TimestampTzPlusMilliseconds(now, BUFFER_INTENT_WAIT_MS);
		t->done_at = 0;
		generation = t->generation;
		buf->intents_waiting += nintents;
	}
	SpinLockRelease(&buf->mutex);

	/* The space is ours: copy without the lock. */
	entry->rows_len = rows_len;
	entry->nevents = nevents;
	entry->nintents = nintents;
	entry->ticket_slot = slot;
	entry->ticket_generation = generation;
	entry->put_at = now;
	for (int i = 0; i < EVENT_SOURCE_COUNT; i++)
		entry->events_by_source[i] = result->events_by_source[i];
	for (int i = 0; i <= ROW_KIND_MAX; i++)
		entry->nrows[i] = result->nrows[i];
	if (rows_len > 0)
		memcpy(BUFFER_ENTRY_ROWS(entry), result->rows.data, rows_len);

	SpinLockAcquire(&buf->mutex);
	entry->state = ENTRY_READY;
	buf->events_ready += nevents;
	if (nintents > 0 || buf->flush_target > buf->done_seq ||
		buf->events_ready >= machpay_batch_size)
		wake = buf->flusher_latch;
	SpinLockRelease(&buf->mutex);

	if (wake)
		SetLatch(wake);
	if (ticket)
	{
		ticket->slot = slot;
		ticket->generation = generation;
	}
	return BUFFER_PUT_OK;
}

TicketState
buffer_ticket_poll(const BufferTicket *ticket, IntentOutcome *outcomes, int noutcomes)
{
	TicketSlot *t;
	TicketState st;
	bool		failed_now = false;

	if (buf == NULL || ticket->slot < 0 || ticket->slot >= BUFFER_TICKETS)
		return TICKET_FAILED;
	t = &buf->tickets[ticket->slot];

	SpinLockAcquire(&buf->mutex);
	if (t->generation != ticket->generation || t->state == SLOT_FREE)
		st = TICKET_FAILED;
	else if (t->state == SLOT_COMMITTED)
	{
		int			n = Min(noutcomes, t->nintents);

		/* Big tickets: the entry stays in the ring until released. */
		if (n > 0 && outcomes)
			memcpy(outcomes,
				   t->nintents <= TICKET_INLINE_OUTCOMES ? t->outcomes :
				   BUFFER_ENTRY_OUTCOMES(ENTRY_AT(t->entry_off)),
				   sizeof(IntentOutcome) * n);
		st = TICKET_COMMITTED;
	}
	else if (t->state == SLOT_FAILED)
		st = TICKET_FAILED;
	else if (!t->claimed && GetCurrentTimestamp() > t->deadline)
	{
		/* Not committed in time: the request is answered 503, nothing stored. */
		t->state = SLOT_FAILED;
		t->done_at = GetCurrentTimestamp();
		buf->intents_waiting -= t->nintents;
		failed_now = true;
		st = TICKET_FAILED;
	}
	else
		st = TICKET_PENDING;
	SpinLockRelease(&buf->mutex);
	if (failed_now)
		stats_add(STAT_INTENTS_FAILED, t->nintents);
	return st;
}

void
buffer_ticket_release(const BufferTicket *ticket)
{
	TicketSlot *t;
	int			given_up = 0;
	Latch	   *wake = NULL;

	if (buf == NULL || ticket->slot < 0 || ticket->slot >= BUFFER_TICKETS)
		return;
	t = &buf->tickets[ticket->slot];
	SpinLockAcquire(&buf->mutex);
	if (t->generation == ticket->generation && t->state != SLOT_FREE)
	{
		if (t->state == SLOT_PENDING && t->claimed)
		{
			/* Being committed right now: the flusher frees it when done. */
			t->released = true;
			t->producer = NULL;
		}
		else
		{
			/* Its entry may be all that holds the head: let space free. */
			if (t->entry_off == buf->head)
				wake = buf->flusher_latch;
			if (t->state == SLOT_PENDING)
			{
				/* Given up by its producer (error, cancel): never commit it. */
				buf->intents_waiting -= t->nintents;
				given_up = t->nintents;
			}
			t->state = SLOT_FREE;
		}
	}
	SpinLockRelease(&buf->mutex);
	if (wake)
		SetLatch(wake);
	if (given_up > 0)
		stats_add(STAT_INTENTS_FAILED, given_up);
}

/* Gauges */

Size
buffer_bytes_used(void)
{
	Size		used;

	if (buf == NULL)
		return 0;
	SpinLockAcquire(&buf->mutex);
	used = buf->reserve - buf->head;
	SpinLockRelease(&buf->mutex);
	return used;
}

Size
buffer_capacity(void)
{
	return buf ? buf->capacity : 0;
}

int
buffer_intents_waiting(void)
{
	int			n;

	if (buf == NULL)
		return 0;
	SpinLockAcquire(&buf->mutex);
	n = buf->intents_waiting;
	SpinLockRelease(&buf->mutex);
	return n;
}

bool
buffer_accepting(void)
{
	bool		ok;

	if (buf == NULL)
		return false;
	SpinLockAcquire(&buf->mutex);
	ok = buf->flusher_running && !buf->shutdown;
	SpinLockRelease(&buf->mutex);
	return ok;
}

/* ---------------------------------------------------------------------
 * Flusher side (buffer_int.h)
 * ---------------------------------------------------------------------
 */

/*
 * The flusher (re)starts: entries a previous flusher took but did not
 * finish are taken again from the head.
 */
uint64
buffer_flusher_attach(bool accepting)
{
	uint64		head;

	SpinLockAcquire(&buf->mutex);
	buf->flusher_latch = &MyProc->procLatch;
	buf->flusher_pid = MyProcPid;
	buf->flusher_running = accepting;
	buf->shutdown = false;
	head = buf->head;
	/* Everything not yet taken counts as ready again. */
	buf->events_ready = 0;
	for (uint64 off = head; off < buf->reserve;)
	{
		BufferEntry *e = ENTRY_AT(off);
		Size		to_end = buf->capacity - (off % buf->capacity);

		if (to_end < sizeof(BufferEntry))
		{
			off += to_end;
			continue;
		}
		if (e->kind == ENTRY_ROWS && e->state == ENTRY_TAKEN)
			e->state = ENTRY_READY; /* its flusher died before deciding */
		if (e->kind == ENTRY_ROWS && e->state == ENTRY_READY)
			buf->events_ready += e->nevents;
		off += e->total;
	}
	for (int i = 0; i < BUFFER_TICKETS; i++)
		buf->tickets[i].claimed = false;
	buf->attempt_started = 0;
	buf->failing_since = 0;
	buf->last_failure = 0;
	SpinLockRelease(&buf->mutex);
	return head;
}

/* The flusher tells how its transactions fare (see buffer_db_stalled). */
void
buffer_flusher_note(BufferFlushNote note)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&buf->mutex);
	switch (note)
	{
		case FLUSH_NOTE_START:
			buf->attempt_started = now;
			break;
		case FLUSH_NOTE_WRITABLE:
			buf->attempt_started = 0;
			buf->failing_since = 0;
			buf->last_failure = 0;
			break;
		case FLUSH_NOTE_FAILED:
			buf->attempt_started = 0;
			if (buf->failing_since == 0)
				buf->failing_since = now;
			buf->last_failure = now;
			break;
	}
	SpinLockRelease(&buf->mutex);
}

/*
 * True when the database has not been taking the flusher's writes for a
 * while: one attempt has been running (a lock wait) for BUFFER_STALL_MS, or
 * attempts have been failing with no commit for BUFFER_STALL_MS and the
 * latest failure is recent.  An idle server with no failures is writable as
 * far as we know; an old streak with no retry since is forgotten.
 */
bool
buffer_db_stalled(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz started,
				failing,
				last;

	if (buf == NULL)
		return false;
	SpinLockAcquire(&buf->mutex);
	started = buf->attempt_started;
	failing = buf->failing_since;
	last = buf->last_failure;
	SpinLockRelease(&buf->mutex);

	if (started != 0 && TimestampDifferenceExceeds(started, now, BUFFER_STALL_MS))
		return true;
	if (failing != 0 && started != 0)
		failing = Min(failing, started);
	if (failing != 0 && TimestampDifferenceExceeds(failing, now, BUFFER_STALL_MS) &&
		!TimestampDifferenceExceeds(Max(last, started), now, BUFFER_FAILURE_MEMORY_MS))
		return true;
	return false;
}

void
buffer_flusher_set_accepting(bool accepting)
{
	SpinLockAcquire(&buf->mutex);
	buf->flusher_running = accepting && !buf->shutdown;
	SpinLockRelease(&buf->mutex);
}

void
buffer_flusher_detach(void)
{
	if (buf == NULL)
		return;
	SpinLockAcquire(&buf->mutex);
	if (buf->flusher_pid == MyProcPid)
	{
		buf->flusher_running = false;
		buf->flusher_latch = NULL;
		buf->flusher_pid = 0;
		buf->attempt_started = 0;
	}
	SpinLockRelease(&buf->mutex);
	ConditionVariableBroadcast(&buf->flushed_cv);
}

/* Refuse new puts from now on; the flusher drains what was accepted. */
void
buffer_begin_shutdown(void)
{
	SpinLockAcquire(&buf->mutex);
	buf->shutdown = true;
	buf->flusher_running = false;
	SpinLockRelease(&buf->mutex);
}

/* True while some producer is still copying into a reserved entry. */
bool
buffer_has_reserved(uint64 from)
{
	bool		found = false;

	SpinLockAcquire(&buf->mutex);
	for (uint64 off = Max(from, buf->head); off < buf->reserve;)
	{
		BufferEntry *e;
		Size		to_end = buf->capacity - (off % buf->capacity);

		if (to_end < sizeof(BufferEntry))
		{
			off += to_end;
			continue;
		}
		e = ENTRY_AT(off);
		if (e->state == ENTRY_RESERVED)
		{
			found = true;
			break;
		}
		off += e->total;
	}
	SpinLockRelease(&buf->mutex);
	return found;
}

/*
 * Take ready entries from *pos on, at most max_bytes of rows and about
 * max_events events (but at least one entry).  Calls take(entry, off, arg) for each and advances *pos.
 * Stops at an entry still being copied.  Returns the number taken.
 */
int
buffer_take(uint64 *pos, Size max_bytes, int64 max_events,
			buffer_take_cb take, void *arg)
{
	int			n = 0;
	Size		bytes = 0;
	int64		events = 0;

	for (;;)
	{
		BufferEntry *e;
		uint64		off = *pos;
		bool		ready;
		Size		to_end;

		SpinLockAcquire(&buf->mutex);
		if (off < buf->head)
		{
			/* The empty ring was restarted at its beginning (buffer_put). */
			*pos = off = buf->head;
		}
		if (off >= buf->reserve)
		{
			SpinLockRelease(&buf->mutex);
			break;
		}
		to_end = buf->capacity - (off % buf->capacity);
		if (to_end < sizeof(BufferEntry))
		{
			SpinLockRelease(&buf->mutex);
			*pos += to_end;
			continue;
		}
		e = ENTRY_AT(off);
		if (e->kind == ENTRY_WRAP)
		{
			SpinLockRelease(&buf->mutex);
			*pos += e->total;
			continue;
		}
		ready = (e->state == ENTRY_READY);
		if (ready && n > 0 &&
			(bytes + e->rows_len > max_bytes || events >= max_events))
			ready = false;
		if (ready)
		{
			e->state = ENTRY_TAKEN;
			buf->events_ready -= e->nevents;
		}
		SpinLockRelease(&buf->mutex);
		if (!ready)
			break;
		bytes += e->rows_len;
		events += e->nevents;
		*pos += e->total;
		take(e, off, arg);
		n++;
	}
	return n;
}

/*
 * Just before commit: claim the tickets of the batch's entries so producers
 * keep waiting past their deadline.  Returns false if some ticket already
 * failed or was given up (its entry must not be committed): the claims are
 * undone and the caller drops those entries (buffer_entry_ticket_live).
 */
bool
buffer_claim_tickets(BufferEntry **entries, int n)
{
	bool		ok = true;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&buf->mutex);
	for (int i = 0; i < n; i++)
	{
		BufferEntry *e = entries[i];
		TicketSlot *t;

		if (e->ticket_slot < 0)
			continue;
		t = &buf->tickets[e->ticket_slot];
		if (t->generation != e->ticket_generation || t->state != SLOT_PENDING ||
			(!t->claimed && now > t->deadline))
		{
			ok = false;
			break;
		}
		t->claimed = true;
	}
	if (!ok)
		for (int i = 0; i < n; i++)
			if (entries[i]->ticket_slot >= 0 &&
				buf->tickets[entries[i]->ticket_slot].generation == entries[i]->ticket_generation)
				buf->tickets[entries[i]->ticket_slot].claimed = false;
	SpinLockRelease(&buf->mutex);
	return ok;
}

void
buffer_unclaim_tickets(BufferEntry **entries, int n)
{
	SpinLockAcquire(&buf->mutex);
	for (int i = 0; i < n; i++)
	{
		BufferEntry *e = entries[i];

		if (e->ticket_slot >= 0 &&
			buf->tickets[e->ticket_slot].generation == e->ticket_generation)
			buf->tickets[e->ticket_slot].claimed = false;
	}
	SpinLockRelease(&buf->mutex);
}

/*
 * Can this entry still be committed?  False when its ticket failed (deadline
 * passed, producer gave up): then the whole request was answered 503 and
 * nothing of it may be stored.
 */
bool
buffer_entry_ticket_live(BufferEntry *e)
{
	TicketSlot *t;
	bool		live;
	bool		failed_now = false;

	if (e->ticket_slot < 0)
		return true;
	t = &buf->tickets[e->ticket_slot];
	SpinLockAcquire(&buf->mutex);
	live = (t->generation == e->ticket_generation && t->state == SLOT_PENDING);
	if (live && !t->claimed && t->deadline != 0 &&
		GetCurrentTimestamp() > t->deadline)
	{
		t->state = SLOT_FAILED;
		t->done_at = GetCurrentTimestamp();
		buf->intents_waiting -= t->nintents;
		failed_now = true;
		live = false;
	}
	SpinLockRelease(&buf->mutex);
	if (failed_now)
	{
		stats_add(STAT_INTENTS_FAILED, e->nintents);
		if (t->producer)
			SetLatch(t->producer);
	}
	return live;
}

/*
 * The entry's fate is decided: committed (outcomes, may be NULL when it has
 * no intents) or dropped.  Posts the ticket and wakes its producer.
 */
void
buffer_entry_finish(BufferEntry *e, bool committed, const IntentOutcome *outcomes)
{
	Latch	   *wake = NULL;
	bool		failed_now = false;

	if (committed && e->nintents > TICKET_INLINE_OUTCOMES && outcomes)
		memcpy(BUFFER_ENTRY_OUTCOMES(e), outcomes, sizeof(IntentOutcome) * e->nintents);

	SpinLockAcquire(&buf->mutex);
	if (e->ticket_slot >= 0)
	{
		TicketSlot *t = &buf->tickets[e->ticket_slot];

		if (t->generation == e->ticket_generation && t->state == SLOT_PENDING)
		{
			buf->intents_waiting -= t->nintents;
			t->claimed = false;
			t->done_at = GetCurrentTimestamp();
			if (t->released)
				t->state = SLOT_FREE;	/* its producer left */
			else
			{
				if (committed && e->nintents <= TICKET_INLINE_OUTCOMES && outcomes)
					memcpy(t->outcomes, outcomes, sizeof(IntentOutcome) * e->nintents);
				t->state = committed ? SLOT_COMMITTED : SLOT_FAILED;
				wake = t->producer;
			}
			failed_now = !committed;
		}
		/* The ticket no longer needs the entry: its space can be freed. */
		if (e->nintents <= TICKET_INLINE_OUTCOMES)
			e->ticket_slot = -1;
	}
	e->state = ENTRY_DONE;
	SpinLockRelease(&buf->mutex);
	if (wake)
		SetLatch(wake);
	if (failed_now)
		stats_add(STAT_INTENTS_FAILED, e->nintents);
}

/*
 * Free space from the head: entries that are done and whose ticket is
 * released (or abandoned).  Also publishes done_seq: every entry below
 * `next_seq` (the flusher's first unfinished entry) has its fate decided.
 */
void
buffer_advance_head(uint64 limit, uint64 next_seq, int64 rows_written)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&buf->mutex);
	while (buf->head < limit)
	{
		uint64		off = buf->head;
		Size		to_end = buf->capacity - (off % buf->capacity);
		BufferEntry *e;

		if (to_end < sizeof(BufferEntry))
		{
			buf->head += to_end;
			continue;
		}
		e = ENTRY_AT(off);
		if (e->state != ENTRY_DONE)
			break;
		if (e->kind == ENTRY_ROWS && e->ticket_slot >= 0)
		{
			TicketSlot *t = &buf->tickets[e->ticket_slot];

			if (t->generation == e->ticket_generation && t->state != SLOT_FREE)
			{
				if (t->state == SLOT_PENDING)
					break;
				/* A producer that died (ERROR exit) never releases it. */
				if (!TimestampDifferenceExceeds(t->done_at, now, TICKET_ABANDON_MS) &&
					!(t->producer_pid > 0 && kill(t->producer_pid, 0) != 0 && errno == ESRCH))
					break;
				/* Its producer never came back for it. */
				t->state = SLOT_FREE;
			}
		}
		buf->head += e->total;
	}
	if (next_seq > buf->done_seq)
		buf->done_seq = next_seq;
	buf->rows_written += rows_written;
	SpinLockRelease(&buf->mutex);
	ConditionVariableBroadcast(&buf->flushed_cv);
}

/* Seq of the entry at `pos`, or seq_next when nothing is there yet. */
uint64
buffer_seq_at(uint64 pos)
{
	uint64		seq;

	SpinLockAcquire(&buf->mutex);
	pos = Max(pos, buf->head);
	for (;;)
	{
		Size		to_end;
		BufferEntry *e;

		if (pos >= buf->reserve)
		{
			seq = buf->seq_next;
			break;
		}
		to_end = buf->capacity - (pos % buf->capacity);
		if (to_end < sizeof(BufferEntry))
		{
			pos += to_end;
			continue;
		}
		e = ENTRY_AT(pos);
		if (e->kind == ENTRY_WRAP)
		{
			pos += e->total;
			continue;
		}
		seq = e->seq;
		break;
	}
	SpinLockRelease(&buf->mutex);
	return seq;
}

/* What the flusher needs to decide whether to flush now. */
void
buffer_flusher_status(int64 *events_ready, int *intents_waiting,
					  bool *flush_requested, bool *any_pending)
{
	SpinLockAcquire(&buf->mutex);
	*events_ready = buf->events_ready;
	*intents_waiting = buf->intents_waiting;
	*flush_requested = buf->flush_target > buf->done_seq;
	*any_pending = buf->reserve != buf->head;
	SpinLockRelease(&buf->mutex);
}

/* ---------------------------------------------------------------------
 * machpay.flush() support
 * ---------------------------------------------------------------------
 */

/*
 * Ask the flusher to flush now; returns the seq every entry below which
 * must be done for the caller's data to be committed, and the rows
 * written so far.  False when no flusher runs.
 */
bool
buffer_request_flush(uint64 *target_seq, uint64 *rows_before)
{
	Latch	   *wake;
	bool		running;

	SpinLockAcquire(&buf->mutex);
	*target_seq = buf->seq_next;
	*rows_before = buf->rows_written;
	running = buf->flusher_latch != NULL;
	if (buf->seq_next > buf->flush_target)
		buf->flush_target = buf->seq_next;
	wake = buf->flusher_latch;
	SpinLockRelease(&buf->mutex);
	if (wake)
		SetLatch(wake);
	return running;
}

/* Sleep until done_seq reaches target; false if the flusher went away. */
bool
buffer_wait_flushed(uint64 target_seq, uint64 *rows_after)
{
	bool		ok = true;

	ConditionVariablePrepareToSleep(&buf->flushed_cv);
	for (;;)
	{
		bool		done;
		bool		gone;

		SpinLockAcquire(&buf->mutex);
		done = buf->done_seq >= target_seq;
		gone = buf->flusher_latch == NULL;
		*rows_after = buf->rows_written;
		SpinLockRelease(&buf->mutex);
		if (done)
			break;
		if (gone)
		{
			ok = false;
			break;
		}
		(void) ConditionVariableTimedSleep(&buf->flushed_cv, 1000, PG_WAIT_EXTENSION);
	}
	ConditionVariableCancelSleep();
	return ok;
}
