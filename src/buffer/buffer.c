/*-------------------------------------------------------------------------
 * buffer.c
 *	  The shared-memory buffer of validated row batches between the ingest
 *	  workers (producers) and the flusher (the one consumer); see buffer.h.
 *
 * The buffer is two byte rings (*queues*) of *entries*, one entry per
 * request: a header, room for the intents' outcomes, then the request's row
 * batch.  Requests with payment intents go to the intents queue, a region
 * of its own (an eighth of machpay.buffer_size), so telemetry can never
 * take the room intents need, and they are written by a writer of their
 * own, so they never wait behind a telemetry batch.  Everything else goes to
 * the telemetry queue, drained by machpay.flush_workers writers.
 *
 * Positions are monotonic 64-bit offsets (ring position = offset %
 * capacity) so "used" is simply reserve - head.  An entry never wraps: when
 * it does not fit before the end of the ring the tail is skipped.  A
 * producer reserves space under the spinlock, copies outside it, then marks
 * the entry ready.  Writers take ready entries in ring order from a shared
 * cursor, one contiguous *run* at a time (so batches are disjoint), commit
 * them, and free space from the head once an entry is done and its ticket
 * (if any) has been released by its producer (or abandoned).  Runs of one
 * queue commit in the order they were taken (buffer_order_wait), so a
 * reader never sees a later request's rows before an earlier one's.  A
 * *ticket* is a slot through which a writer hands the intents' outcomes of
 * one entry back to its producer.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/memutils.h"
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

/*
 * A ticket slot's life.  The producer is the request that put the entry
 * and waits for its answer; a writer commits it.  *Undecided* states are
 * PENDING, CLAIMED, CLAIMED_LEFT and LEFT; *claimed* ones (a commit is
 * under way: the deadline does not apply) CLAIMED and CLAIMED_LEFT.
 *
 *   FREE -> PENDING             a request with intents is put (buffer_put)
 *   PENDING -> CLAIMED          a writer is about to commit (buffer_claim_tickets)
 *   CLAIMED -> PENDING          that attempt failed; retried (buffer_unclaim_tickets,
 *                               or a claim of the batch that did not succeed)
 *   CLAIMED -> COMMITTED|FAILED the writer decided it (buffer_entry_finish)
 *   PENDING -> FAILED           the deadline passed unclaimed (buffer_ticket_poll,
 *                               buffer_entry_ticket_live)
 *   PENDING -> FREE             the producer gave up (buffer_ticket_release):
 *                               its entry is never committed
 *   CLAIMED -> CLAIMED_LEFT     the producer left during the commit
 *                               (buffer_ticket_release)
 *   CLAIMED_LEFT -> FREE        decided, nobody to tell (buffer_entry_finish)
 *   CLAIMED_LEFT -> LEFT        that attempt failed (as CLAIMED -> PENDING)
 *   LEFT -> CLAIMED_LEFT        retried (as PENDING -> CLAIMED)
 *   LEFT -> FAILED | FREE       as from PENDING: deadline; decided by a writer
 *   COMMITTED|FAILED -> FREE    the producer took the answer (buffer_ticket_release),
 *                               or never will: TICKET_ABANDON_MS after, or its
 *                               process is gone (advance_queue_head)
 */
typedef enum TicketSlotState
{
	SLOT_FREE,
	SLOT_PENDING,				/* waiting for a writer; fails at its deadline */
	SLOT_CLAIMED,				/* a writer is committing it */
	SLOT_CLAIMED_LEFT,			/* being committed; its producer left */
	SLOT_LEFT,					/* its producer left during a failed commit */
	SLOT_COMMITTED,				/* outcomes posted */
	SLOT_FAILED,				/* could not be committed: the request gets 503 */
} TicketSlotState;

typedef struct TicketSlot
{
	TicketSlotState state;
	uint64		generation;
	BufferQueueId queue;		/* of its entry */
	uint64		entry_off;		/* logical offset of its entry */
	int			nintents;
	Latch	   *producer;
	pid_t		producer_pid;
	TimestampTz deadline;		/* undecided past this fails (unless claimed) */
	TimestampTz done_at;		/* when it became COMMITTED/FAILED */
	IntentOutcome outcomes[TICKET_INLINE_OUTCOMES];
} TicketSlot;

static inline bool
slot_undecided(const TicketSlot *t)
{
	return t->state == SLOT_PENDING || t->state == SLOT_CLAIMED ||
		t->state == SLOT_CLAIMED_LEFT || t->state == SLOT_LEFT;
}

static inline bool
slot_claimed(const TicketSlot *t)
{
	return t->state == SLOT_CLAIMED || t->state == SLOT_CLAIMED_LEFT;
}

/* PENDING -> CLAIMED, LEFT -> CLAIMED_LEFT */
static inline void
slot_claim(TicketSlot *t)
{
	if (t->state == SLOT_PENDING)
		t->state = SLOT_CLAIMED;
	else if (t->state == SLOT_LEFT)
		t->state = SLOT_CLAIMED_LEFT;
}

/* CLAIMED -> PENDING, CLAIMED_LEFT -> LEFT */
static inline void
slot_unclaim(TicketSlot *t)
{
	if (t->state == SLOT_CLAIMED)
		t->state = SLOT_PENDING;
	else if (t->state == SLOT_CLAIMED_LEFT)
		t->state = SLOT_LEFT;
}

/* One ring and its cursors. */
typedef struct BufferQueue
{
	Size		capacity;		/* ring bytes */
	Size		ring_offset;	/* where the ring starts in BufferShared.ring */
	uint64		head;			/* first byte still in use */
	uint64		reserve;		/* next byte to hand out */
	uint64		take;			/* next byte a writer looks at */
	int64		events_ready;	/* events in ready entries not yet taken */
	int			intents_waiting;	/* intents put here, not yet committed or failed */
	uint64		runs_taken;		/* runs handed out, for the commit order */
	ConditionVariable order_cv; /* broadcast when a run is settled */
} BufferQueue;

/* One writer process (its slot number is its bgw_main_arg). */
typedef struct WriterSlot
{
	bool		attached;
	pid_t		pid;
	Latch	   *latch;
	BufferQueueId queue;
	uint64		oldest_unfinished;	/* seq of its oldest undecided entry */
	uint64		open_run;		/* run taken and not committed yet; 0 = none */
	TimestampTz run_taken_at;	/* when open_run was taken */
	/* Is the database taking its writes?  Read by /readyz. */
	TimestampTz attempt_started;	/* a flush attempt is running since; 0 = none */
	TimestampTz failing_since;	/* first failed attempt since the last commit */
	TimestampTz last_failure;	/* end of the latest failed attempt */
} WriterSlot;

typedef struct BufferShared
{
	slock_t		mutex;
	uint64		seq_next;		/* seq of the next entry, both queues */
	uint64		done_seq;		/* every entry with seq below is committed or dropped */
	bool		shutdown;
	uint64		flush_target;	/* machpay.flush() wants done_seq to reach this */
	uint64		rows_written;	/* rows committed by the writers, ever */
	ConditionVariable flushed_cv;	/* broadcast after every flush */
	BufferQueue queues[BUFFER_QUEUES];
	WriterSlot	writers[BUFFER_MAX_WRITERS];
	TicketSlot	tickets[BUFFER_TICKETS];
	char		ring[FLEXIBLE_ARRAY_MEMBER];
} BufferShared;

static BufferShared *buf = NULL;

/* This process's slot when it is a writer (buffer_flusher_attach). */
static int	my_slot = -1;

#define MY_WRITER	(&buf->writers[my_slot])
#define MY_QUEUE	(&buf->queues[buf->writers[my_slot].queue])

static inline char *
ring_at(const BufferQueue *q, uint64 off)
{
	return buf->ring + q->ring_offset + (off % q->capacity);
}

#define ENTRY_AT(q, off)	((BufferEntry *) ring_at((q), (off)))

static Size
ring_bytes(void)
{
	return MAXALIGN((Size) machpay_buffer_size_kb * 1024);
}

/* The intents queue's share of machpay.buffer_size. */
static Size
intents_ring_bytes(void)
{
	return MAXALIGN(ring_bytes() / BUFFER_INTENTS_SHARE);
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
		Size		intents = intents_ring_bytes();

		memset(buf, 0, offsetof(BufferShared, ring));
		SpinLockInit(&buf->mutex);
		ConditionVariableInit(&buf->flushed_cv);
		buf->queues[QUEUE_TELEMETRY].capacity = ring_bytes() - intents;
		buf->queues[QUEUE_TELEMETRY].ring_offset = 0;
		buf->queues[QUEUE_INTENTS].capacity = intents;
		buf->queues[QUEUE_INTENTS].ring_offset = ring_bytes() - intents;
		for (int i = 0; i < BUFFER_QUEUES; i++)
			ConditionVariableInit(&buf->queues[i].order_cv);
		for (int i = 0; i < BUFFER_TICKETS; i++)
			buf->tickets[i].state = SLOT_FREE;
		for (int i = 0; i < BUFFER_MAX_WRITERS; i++)
			buf->writers[i].oldest_unfinished = PG_UINT64_MAX;
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
wrap_waste(const BufferQueue *q, uint64 off, Size needed)
{
	Size		to_end = q->capacity - (off % q->capacity);

	return needed > to_end ? to_end : 0;
}

/* Does the queue have a writer?  Caller holds the mutex. */
static bool
queue_served(BufferQueueId qid)
{
	for (int i = 0; i < BUFFER_MAX_WRITERS; i++)
		if (buf->writers[i].attached && buf->writers[i].queue == qid)
			return true;
	return false;
}

/* Writers attached to the queue.  Caller holds the mutex. */
static int
queue_writers(BufferQueueId qid)
{
	int			n = 0;

	for (int i = 0; i < BUFFER_MAX_WRITERS; i++)
		if (buf->writers[i].attached && buf->writers[i].queue == qid)
			n++;
	return n;
}

static bool
any_writer(void)
{
	return queue_served(QUEUE_TELEMETRY) || queue_served(QUEUE_INTENTS);
}

/*
 * Which queue takes an entry of this many intents and bytes: intents go to
 * their own queue while it has a writer and the entry can ever fit there;
 * otherwise (a writer restarting, a huge request) to the other one, whose
 * writers handle tickets as well.  Caller holds the mutex.
 */
static BufferQueueId
queue_for(int nintents, Size needed)
{
	BufferQueueId natural = nintents > 0 ? QUEUE_INTENTS : QUEUE_TELEMETRY;
	BufferQueueId other = natural == QUEUE_INTENTS ? QUEUE_TELEMETRY : QUEUE_INTENTS;

	if (natural == QUEUE_INTENTS && needed > buf->queues[QUEUE_INTENTS].capacity)
		return QUEUE_TELEMETRY;
	if (!queue_served(natural) && queue_served(other) &&
		needed <= buf->queues[other].capacity)
		return other;
	return natural;
}

/* Set the latches of the queue's writers (collected under the mutex). */
static int
queue_latches(BufferQueueId qid, Latch **latches)
{
	int			n = 0;

	for (int i = 0; i < BUFFER_MAX_WRITERS; i++)
		if (buf->writers[i].attached && buf->writers[i].queue == qid &&
			buf->writers[i].latch)
			latches[n++] = buf->writers[i].latch;
	return n;
}

static void
set_latches(Latch **latches, int n)
{
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/* ---------------------------------------------------------------------
 * Producer side
 * ---------------------------------------------------------------------
 */

static bool
queue_has_room(const BufferQueue *q, Size bytes)
{
	return q->reserve - q->head + bytes <= q->capacity;
}

BufferRoom
buffer_room(Size bytes)
{
	BufferRoom room = BUFFER_ROOM_NONE;

	if (buf == NULL)
		return BUFFER_ROOM_NONE;
	/* Row batches run larger than bodies only by headers; a guess is enough. */
	bytes = MAXALIGN(sizeof(BufferEntry)) + MAXALIGN(bytes);
	SpinLockAcquire(&buf->mutex);
	if (any_writer() && !buf->shutdown)
	{
		if (queue_has_room(&buf->queues[queue_for(0, bytes)], bytes))
			room = BUFFER_ROOM_ANY;
		else if (queue_has_room(&buf->queues[queue_for(1, bytes)], bytes))
			room = BUFFER_ROOM_INTENTS_ONLY;
	}
	SpinLockRelease(&buf->mutex);
	return room;
}

bool
buffer_has_room(Size bytes)
{
	return buffer_room(bytes) == BUFFER_ROOM_ANY;
}

/* Where a put landed: its entry in a queue and its ticket (slot -1: none). */
typedef struct PutPlace
{
	BufferQueueId qid;
	BufferEntry *entry;
	int			slot;
	uint64		generation;
} PutPlace;

/*
 * Bytes to skip at the ring's end before an entry of `needed` bytes (it
 * never wraps), or -1 when the queue has no room for it.  An empty queue
 * restarts at the ring's beginning rather than wrap.  Mutex held.
 */
static int64
queue_fit(BufferQueue *q, Size needed)
{
	Size		waste = wrap_waste(q, q->reserve, needed);

	if (waste > 0 && q->head == q->reserve)
	{
		q->reserve += waste;
		q->head = q->reserve;
		q->take = q->reserve;
		waste = 0;
	}
	if (needed > q->capacity ||
		q->reserve - q->head + waste + needed > q->capacity)
		return -1;
	return (int64) waste;
}

/* A free ticket slot, or -1.  Mutex held. */
static int
ticket_find_free(void)
{
	/* Linear scan: the table is small and this runs once per intent request. */
	for (int i = 0; i < BUFFER_TICKETS; i++)
		if (buf->tickets[i].state == SLOT_FREE)
			return i;
	return -1;
}

/*
 * Take `needed` bytes after skipping `waste` at the ring's end, and give
 * them an entry header (RESERVED).  Returns the entry's offset.  Mutex held.
 */
static uint64
queue_reserve(BufferQueue *q, BufferQueueId qid, Size waste, Size needed)
{
	BufferEntry *entry;
	uint64		off;

	if (waste > 0)
	{
		/* Mark the skipped tail so the writers jump it. */
		if (waste >= sizeof(BufferEntry))
		{
			BufferEntry *skip = ENTRY_AT(q, q->reserve);

			skip->kind = ENTRY_WRAP;
			skip->state = ENTRY_DONE;
			skip->done_lsn = InvalidXLogRecPtr;
			skip->total = waste;
		}
		q->reserve += waste;
	}
	off = q->reserve;
	q->reserve += needed;
	entry = ENTRY_AT(q, off);
	entry->kind = ENTRY_ROWS;
	entry->state = ENTRY_RESERVED;
	entry->done_lsn = InvalidXLogRecPtr;
	entry->seq = buf->seq_next++;
	entry->total = needed;
	entry->queue = qid;
	entry->taken_by = -1;
	return off;
}

/* FREE -> PENDING: the ticket of the entry at `off`.  Mutex held. */
static uint64
ticket_open(int slot, BufferQueueId qid, uint64 off, int nintents, TimestampTz now)
{
	TicketSlot *t = &buf->tickets[slot];

	t->state = SLOT_PENDING;
	t->generation++;
	t->queue = qid;
	t->entry_off = off;
	t->nintents = nintents;
	t->producer = MyProc ? &MyProc->procLatch : NULL;
	t->producer_pid = MyProcPid;
	t->deadline = TimestampTzPlusMilliseconds(now, BUFFER_INTENT_WAIT_MS);
	t->done_at = 0;
	buf->queues[qid].intents_waiting += nintents;
	return t->generation;
}

/*
 * Phase 1, under the mutex: choose the queue, check for room and a free
 * ticket, then reserve the space and open the ticket.  Nothing changes
 * when it returns anything but BUFFER_PUT_OK.
 */
static BufferPutStatus
put_reserve(int nintents, Size needed, TimestampTz now, PutPlace *place)
{
	BufferQueue *q;
	int64		waste;
	uint64		off;

	place->slot = -1;
	place->generation = 0;
	SpinLockAcquire(&buf->mutex);
	if (!any_writer() || buf->shutdown)
	{
		SpinLockRelease(&buf->mutex);
		return BUFFER_PUT_UNAVAILABLE;
	}
	place->qid = queue_for(nintents, needed);
	q = &buf->queues[place->qid];
	waste = queue_fit(q, needed);
	if (waste >= 0 && nintents > 0)
		place->slot = ticket_find_free();
	if (waste < 0 || (nintents > 0 && place->slot < 0))
	{
		SpinLockRelease(&buf->mutex);
		return BUFFER_PUT_FULL;
	}
	off = queue_reserve(q, place->qid, (Size) waste, needed);
	place->entry = ENTRY_AT(q, off);
	if (place->slot >= 0)
		place->generation = ticket_open(place->slot, place->qid, off, nintents, now);
	SpinLockRelease(&buf->mutex);
	return BUFFER_PUT_OK;
}

/* Phase 2, without the lock (the space is ours): the entry's counts and rows. */
static void
put_copy(const PutPlace *place, const BufferRows *rows, int nevents, TimestampTz now)
{
	BufferEntry *entry = place->entry;

	entry->rows_len = rows->len;
	entry->nevents = nevents;
	entry->nintents = rows->nintents;
	entry->ticket_slot = place->slot;
	entry->ticket_generation = place->generation;
	entry->put_at = now;
	for (int i = 0; i < EVENT_SOURCE_COUNT; i++)
		entry->events_by_source[i] = rows->events_by_source[i];
	for (int i = 0; i <= ROW_KIND_MAX; i++)
		entry->nrows[i] = rows->nrows[i];
	if (rows->len > 0)
		memcpy(BUFFER_ENTRY_ROWS(entry), rows->data, rows->len);
}

/*
 * Phase 3: the entry is READY; wake the queue's writers when it carries
 * intents, flush() waits, or a batch's worth of events is ready.
 */
static void
put_publish(const PutPlace *place, int nevents, int nintents)
{
	BufferQueue *q = &buf->queues[place->qid];
	Latch	   *wake[BUFFER_MAX_WRITERS];
	int			nwake = 0;

	SpinLockAcquire(&buf->mutex);
	place->entry->state = ENTRY_READY;
	q->events_ready += nevents;
	if (nintents > 0 || buf->flush_target > buf->done_seq ||
		q->events_ready >= machpay_batch_size)
		nwake = queue_latches(place->qid, wake);
	SpinLockRelease(&buf->mutex);
	set_latches(wake, nwake);
}

BufferPutStatus
buffer_put(const BufferRows *rows, BufferTicket *ticket)
{
	Size		needed = entry_bytes(rows->nintents, rows->len);
	TimestampTz now = GetCurrentTimestamp();
	int			nevents = 0;
	PutPlace	place;
	BufferPutStatus status;

	if (ticket)
	{
		ticket->slot = -1;
		ticket->generation = 0;
	}
	if (buf == NULL)
		return BUFFER_PUT_UNAVAILABLE;
	for (int i = 0; i < EVENT_SOURCE_COUNT; i++)
		nevents += (int) rows->events_by_source[i];

	status = put_reserve(rows->nintents, needed, now, &place);
	if (status != BUFFER_PUT_OK)
		return status;
	put_copy(&place, rows, nevents, now);
	put_publish(&place, nevents, rows->nintents);
	if (ticket)
	{
		ticket->slot = place.slot;
		ticket->generation = place.generation;
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
				   BUFFER_ENTRY_OUTCOMES(ENTRY_AT(&buf->queues[t->queue], t->entry_off)),
				   sizeof(IntentOutcome) * n);
		st = TICKET_COMMITTED;
	}
	else if (t->state == SLOT_FAILED)
		st = TICKET_FAILED;
	else if (!slot_claimed(t) && GetCurrentTimestamp() > t->deadline)
	{
		/* Not committed in time: the request is answered 503, nothing stored. */
		t->state = SLOT_FAILED;
		t->done_at = GetCurrentTimestamp();
		buf->queues[t->queue].intents_waiting -= t->nintents;
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
	Latch	   *wake[BUFFER_MAX_WRITERS];
	int			nwake = 0;

	if (buf == NULL || ticket->slot < 0 || ticket->slot >= BUFFER_TICKETS)
		return;
	t = &buf->tickets[ticket->slot];
	SpinLockAcquire(&buf->mutex);
	if (t->generation == ticket->generation && t->state != SLOT_FREE)
	{
		if (slot_claimed(t))
		{
			/* Being committed right now: the writer frees it when done. */
			t->state = SLOT_CLAIMED_LEFT;
			t->producer = NULL;
		}
		else
		{
			/* Its entry may be all that holds the head: let space free. */
			if (t->entry_off == buf->queues[t->queue].head)
				nwake = queue_latches(t->queue, wake);
			if (slot_undecided(t))
			{
				/* Given up by its producer (error, cancel): never commit it. */
				buf->queues[t->queue].intents_waiting -= t->nintents;
				given_up = t->nintents;
			}
			t->state = SLOT_FREE;
		}
	}
	SpinLockRelease(&buf->mutex);
	set_latches(wake, nwake);
	if (given_up > 0)
		stats_add(STAT_INTENTS_FAILED, given_up);
}

/* Gauges */

Size
buffer_bytes_used(void)
{
	Size		used = 0;

	if (buf == NULL)
		return 0;
	SpinLockAcquire(&buf->mutex);
	for (int i = 0; i < BUFFER_QUEUES; i++)
		used += buf->queues[i].reserve - buf->queues[i].head;
	SpinLockRelease(&buf->mutex);
	return used;
}

Size
buffer_capacity(void)
{
	return buf ? ring_bytes() : 0;
}

int
buffer_intents_waiting(void)
{
	int			n = 0;

	if (buf == NULL)
		return 0;
	SpinLockAcquire(&buf->mutex);
	for (int i = 0; i < BUFFER_QUEUES; i++)
		n += buf->queues[i].intents_waiting;
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
	ok = any_writer() && !buf->shutdown;
	SpinLockRelease(&buf->mutex);
	return ok;
}

bool
buffer_shutting_down(void)
{
	bool		down;

	if (buf == NULL)
		return false;
	SpinLockAcquire(&buf->mutex);
	down = buf->shutdown;
	SpinLockRelease(&buf->mutex);
	return down;
}

/* ---------------------------------------------------------------------
 * Writer side (buffer_int.h)
 * ---------------------------------------------------------------------
 */

/* Step over what is not an entry at `off`; false at the queue's end. */
static bool
skip_to_entry(const BufferQueue *q, uint64 *off, uint64 end)
{
	while (*off < end)
	{
		Size		to_end = q->capacity - (*off % q->capacity);

		if (to_end < sizeof(BufferEntry))
			*off += to_end;
		else if (ENTRY_AT(q, *off)->kind == ENTRY_WRAP)
			*off += ENTRY_AT(q, *off)->total;
		else
			return true;
	}
	return false;
}

/*
 * A writer (re)starts in its slot: entries its previous incarnation took
 * but did not finish are handed back to it through take(), in ring order;
 * the other writers' entries are theirs.  Returns how many.
 */
int
buffer_flusher_attach(int slot, BufferQueueId qid, bool accepting,
					  buffer_take_cb take, void *arg)
{
	BufferQueue *q = &buf->queues[qid];
	WriterSlot *w;
	int			n = 0;
	uint64		off;
	uint64		end;
	bool		found = false;

	Assert(slot >= 0 && slot < BUFFER_MAX_WRITERS);
	my_slot = slot;
	w = &buf->writers[slot];
	SpinLockAcquire(&buf->mutex);
	w->latch = &MyProc->procLatch;
	w->pid = MyProcPid;
	w->queue = qid;
	w->attached = accepting;
	w->open_run = 0;
	buf->shutdown = false;
	w->attempt_started = 0;
	w->failing_since = 0;
	w->last_failure = 0;
	/* Our first leftover entry, if any: the head cannot pass it. */
	end = q->take;
	for (off = q->head; skip_to_entry(q, &off, end); off += ENTRY_AT(q, off)->total)
	{
		BufferEntry *e = ENTRY_AT(q, off);

		if (e->state == ENTRY_TAKEN && e->taken_by == slot)
		{
			found = true;
			break;
		}
	}
	if (!found)
		w->oldest_unfinished = PG_UINT64_MAX;
	SpinLockRelease(&buf->mutex);

	/*
	 * From our first leftover on nothing is reused while we hold it, and only
	 * this process marks entries taken by this slot: walk without the lock.
	 */
	for (; found && skip_to_entry(q, &off, end); off += ENTRY_AT(q, off)->total)
	{
		BufferEntry *e = ENTRY_AT(q, off);

		if (e->state == ENTRY_TAKEN && e->taken_by == slot)
		{
			take(e, off, arg);
			n++;
		}
	}
	ConditionVariableBroadcast(&q->order_cv);
	return n;
}

/* A writer tells how its transactions fare (see buffer_db_stalled). */
void
buffer_flusher_note(BufferFlushNote note)
{
	TimestampTz now = GetCurrentTimestamp();
	WriterSlot *w = MY_WRITER;

	SpinLockAcquire(&buf->mutex);
	switch (note)
	{
		case FLUSH_NOTE_START:
			w->attempt_started = now;
			break;
		case FLUSH_NOTE_WRITABLE:
			w->attempt_started = 0;
			w->failing_since = 0;
			w->last_failure = 0;
			break;
		case FLUSH_NOTE_REFUSED:
			w->attempt_started = 0;
			break;
		case FLUSH_NOTE_FAILED:
			/* failing since the failed attempt began (a lock wait, say) */
			if (w->failing_since == 0)
				w->failing_since = w->attempt_started != 0 ?
					w->attempt_started : now;
			w->attempt_started = 0;
			w->last_failure = now;
			break;
	}
	SpinLockRelease(&buf->mutex);
}

/*
 * True when the database has not been taking some writer's writes for a
 * while: one attempt has been running (a lock wait) for BUFFER_STALL_MS, or
 * attempts have been failing with no commit for BUFFER_STALL_MS and the
 * latest failure is recent.  An idle server with no failures is writable as
 * far as we know; an old streak with no retry since is forgotten.  Each
 * writer is judged on its own: one committing does not hide another stuck.
 */
static bool
writer_stalled(TimestampTz started, TimestampTz failing, TimestampTz last,
			   TimestampTz now)
{
	if (started != 0 && TimestampDifferenceExceeds(started, now, BUFFER_STALL_MS))
		return true;
	if (failing != 0 && started != 0)
		failing = Min(failing, started);
	if (failing != 0 && TimestampDifferenceExceeds(failing, now, BUFFER_STALL_MS) &&
		!TimestampDifferenceExceeds(Max(last, started), now, BUFFER_FAILURE_MEMORY_MS))
		return true;
	return false;
}

bool
buffer_db_stalled(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		stalled = false;

	if (buf == NULL)
		return false;
	SpinLockAcquire(&buf->mutex);
	for (int i = 0; i < BUFFER_MAX_WRITERS && !stalled; i++)
	{
		WriterSlot *w = &buf->writers[i];

		if (w->pid != 0)
			stalled = writer_stalled(w->attempt_started, w->failing_since,
									 w->last_failure, now);
	}
	SpinLockRelease(&buf->mutex);
	return stalled;
}

void
buffer_flusher_set_accepting(bool accepting)
{
	SpinLockAcquire(&buf->mutex);
	MY_WRITER->attached = accepting && !buf->shutdown;
	SpinLockRelease(&buf->mutex);
}

/*
 * The writer leaves (exit, crash of this process): its run is settled so
 * later runs need not wait; its taken entries stay taken by its slot and
 * count as unfinished (flush() keeps waiting) until it comes back.
 */
void
buffer_flusher_detach(void)
{
	BufferQueue *q;

	if (buf == NULL || my_slot < 0)
		return;
	q = MY_QUEUE;
	SpinLockAcquire(&buf->mutex);
	if (MY_WRITER->pid == MyProcPid)
	{
		MY_WRITER->attached = false;
		MY_WRITER->latch = NULL;
		MY_WRITER->pid = 0;
		MY_WRITER->open_run = 0;
		MY_WRITER->attempt_started = 0;
	}
	SpinLockRelease(&buf->mutex);
	ConditionVariableBroadcast(&q->order_cv);
	ConditionVariableBroadcast(&buf->flushed_cv);
}

/* Refuse new puts from now on; the writers drain what was accepted. */
void
buffer_begin_shutdown(void)
{
	SpinLockAcquire(&buf->mutex);
	buf->shutdown = true;
	MY_WRITER->attached = false;
	SpinLockRelease(&buf->mutex);
}

/* True while some producer is still copying into an entry of our queue. */
bool
buffer_has_reserved(void)
{
	BufferQueue *q = MY_QUEUE;
	bool		found = false;

	SpinLockAcquire(&buf->mutex);
	for (uint64 off = q->take; skip_to_entry(q, &off, q->reserve);)
	{
		if (ENTRY_AT(q, off)->state == ENTRY_RESERVED)
		{
			found = true;
			break;
		}
		off += ENTRY_AT(q, off)->total;
	}
	SpinLockRelease(&buf->mutex);
	return found;
}

static bool run_expired(const WriterSlot *w, TimestampTz now);

/*
 * Take ready entries of our queue from the shared cursor on: at most
 * max_entries, max_bytes of rows and about max_events events (but at least
 * one entry).  The run is taken under the mutex, so two writers' runs never
 * interleave; take(entry, off, arg) is called for each afterwards and must
 * not fail (the caller made room for max_entries).  Stops at an entry still
 * being copied.  Returns the number taken.
 */
int
buffer_take(Size max_bytes, int64 max_events, int max_entries,
			buffer_take_cb take, void *arg)
{
	BufferQueue *q = MY_QUEUE;
	uint64		first = 0;
	uint64		off;
	int			n = 0;
	Size		bytes = 0;
	int64		events = 0;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&buf->mutex);
	if (q->take < q->head)
		q->take = q->head;		/* the empty ring was restarted (buffer_put) */
	/*
	 * A writer still holding an unsettled run (its batch failed and is
	 * retried) takes nothing more while other writers serve the queue: what
	 * it took now would commit with that earlier run, ahead of theirs.
	 */
	if (MY_WRITER->open_run != 0 && !run_expired(MY_WRITER, now) &&
		queue_writers(MY_WRITER->queue) > 1)
		max_entries = 0;
	while (n < max_entries && skip_to_entry(q, &q->take, q->reserve))
	{
		BufferEntry *e = ENTRY_AT(q, q->take);

		if (e->state != ENTRY_READY)
			break;
		if (n > 0 && (bytes + e->rows_len > max_bytes || events >= max_events))
			break;
		e->state = ENTRY_TAKEN;
		e->taken_by = my_slot;
		q->events_ready -= e->nevents;
		if (n == 0)
		{
			first = q->take;
			/* A run kept past its wait (a failing batch) is not waited for. */
			if (MY_WRITER->open_run == 0 || run_expired(MY_WRITER, now))
			{
				MY_WRITER->open_run = ++q->runs_taken;
				MY_WRITER->run_taken_at = now;
			}
			if (MY_WRITER->oldest_unfinished == PG_UINT64_MAX)
				MY_WRITER->oldest_unfinished = e->seq;
		}
		bytes += e->rows_len;
		events += e->nevents;
		q->take += e->total;
		n++;
	}
	SpinLockRelease(&buf->mutex);

	/* The run is ours alone now: hand it over without the lock. */
	off = first;
	for (int i = 0; i < n; i++)
	{
		BufferEntry *e;

		(void) skip_to_entry(q, &off, PG_UINT64_MAX);
		e = ENTRY_AT(q, off);
		take(e, off, arg);
		off += e->total;
	}
	return n;
}

/* Later runs stop waiting for a run this old: its batch keeps failing. */
static bool
run_expired(const WriterSlot *w, TimestampTz now)
{
	return TimestampDifferenceExceeds(w->run_taken_at, now, BUFFER_ORDER_WAIT_MS);
}

/*
 * Before committing: wait until every run of our queue taken before ours is
 * settled, so commits become visible in take order.  A run is settled once
 * all of it is committed or given up; one whose batch keeps failing is not
 * waited for past BUFFER_ORDER_WAIT_MS after it was taken.  When the writer of an earlier run waits for a lock that we hold (a row we
 * inserted: a new series, an intent's key), waiting for it would be a
 * deadlock no one detects: returns false, and the caller rolls back and
 * writes its batch again, behind it.  Returns at once with one writer per
 * queue.
 */
bool
buffer_order_wait(buffer_blocks_cb blocks_writer)
{
	BufferQueue *q = MY_QUEUE;
	bool		sleeping = false;
	bool		ours = true;

	for (;;)
	{
		pid_t		before = 0;
		uint64		mine;
		PGPROC	   *proc;
		TimestampTz now = GetCurrentTimestamp();

		SpinLockAcquire(&buf->mutex);
		mine = MY_WRITER->open_run;
		for (int i = 0; mine != 0 && i < BUFFER_MAX_WRITERS; i++)
		{
			WriterSlot *w = &buf->writers[i];

			if (i != my_slot && w->queue == MY_WRITER->queue && w->attached &&
				w->open_run != 0 && w->open_run < mine && !run_expired(w, now))
			{
				before = w->pid;
				break;
			}
		}
		SpinLockRelease(&buf->mutex);
		if (before == 0)
			break;
		proc = BackendPidGetProc(before);
		if (proc == NULL)
			break;
		if ((proc->wait_event_info & 0xFF000000) == PG_WAIT_LOCK &&
			blocks_writer(before))
		{
			ours = false;
			break;
		}
		if (!sleeping)
		{
			ConditionVariablePrepareToSleep(&q->order_cv);
			sleeping = true;
		}
		(void) ConditionVariableTimedSleep(&q->order_cv, 10, PG_WAIT_EXTENSION);
	}
	if (sleeping)
		ConditionVariableCancelSleep();
	return ours;
}

/* Our run is committed or given up: later runs may commit. */
void
buffer_order_settle(void)
{
	bool		had;

	SpinLockAcquire(&buf->mutex);
	had = MY_WRITER->open_run != 0;
	MY_WRITER->open_run = 0;
	SpinLockRelease(&buf->mutex);
	if (had)
		ConditionVariableBroadcast(&MY_QUEUE->order_cv);
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
		if (t->generation != e->ticket_generation || !slot_undecided(t) ||
			(!slot_claimed(t) && now > t->deadline))
		{
			ok = false;
			break;
		}
		slot_claim(t);
	}
	if (!ok)
		for (int i = 0; i < n; i++)
			if (entries[i]->ticket_slot >= 0 &&
				buf->tickets[entries[i]->ticket_slot].generation == entries[i]->ticket_generation)
				slot_unclaim(&buf->tickets[entries[i]->ticket_slot]);
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
			slot_unclaim(&buf->tickets[e->ticket_slot]);
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
	live = (t->generation == e->ticket_generation && slot_undecided(t));
	if (live && !slot_claimed(t) && t->deadline != 0 &&
		GetCurrentTimestamp() > t->deadline)
	{
		t->state = SLOT_FAILED;
		t->done_at = GetCurrentTimestamp();
		buf->queues[t->queue].intents_waiting -= t->nintents;
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

		if (t->generation == e->ticket_generation && slot_undecided(t))
		{
			buf->queues[t->queue].intents_waiting -= t->nintents;
			t->done_at = GetCurrentTimestamp();
			if (t->state == SLOT_CLAIMED_LEFT || t->state == SLOT_LEFT)
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
 * A telemetry entry committed without waiting for its WAL flush: it is
 * decided (flush() and the order of runs go on), but its space is freed,
 * and so the room to accept more, only once its commit record is on disk.
 * Until then it still counts as buffered, so a crash loses at most the
 * buffer, as SPEC §7 says, while the writer goes on with the next batch
 * instead of waiting for the disk.
 */
void
buffer_entry_finish_at_lsn(BufferEntry *e, XLogRecPtr commit_end)
{
	Assert(e->nintents == 0);
	e->done_lsn = commit_end;	/* published by the spinlock in finish */
	buffer_entry_finish(e, true, NULL);
}

BufferEntry *
buffer_entry_copy_telemetry(const BufferEntry *e, const char *rows, Size rows_len)
{
	BufferEntry *copy = MemoryContextAllocZero(TopMemoryContext,
											   MAXALIGN(sizeof(BufferEntry)) + rows_len);

	copy->kind = ENTRY_ROWS;
	copy->state = ENTRY_TAKEN;
	copy->seq = e->seq;
	copy->rows_len = rows_len;
	copy->nevents = e->nevents - (int32) e->events_by_source[SOURCE_PAYMENT_INTENT];
	copy->nintents = 0;
	copy->ticket_slot = -1;
	copy->done_lsn = InvalidXLogRecPtr;
	copy->put_at = e->put_at;
	memcpy(copy->events_by_source, e->events_by_source, sizeof(copy->events_by_source));
	copy->events_by_source[SOURCE_PAYMENT_INTENT] = 0;
	memcpy(copy->nrows, e->nrows, sizeof(copy->nrows));
	copy->nrows[ROW_INTENT] = 0;
	memcpy(BUFFER_ENTRY_ROWS(copy), rows, rows_len);
	return copy;
}

/* Seq of the first entry at or after `pos` in q, or seq_next.  Mutex held. */
static uint64
queue_seq_from(const BufferQueue *q, uint64 pos)
{
	pos = Max(pos, q->head);
	if (skip_to_entry(q, &pos, q->reserve))
		return ENTRY_AT(q, pos)->seq;
	return buf->seq_next;
}

/*
 * done_seq: below it every entry of both queues is decided.  Entries not
 * taken yet start at each queue's take cursor; taken ones are bounded by
 * each writer's oldest undecided entry.  Mutex held.
 */
static uint64
compute_done_seq(void)
{
	uint64		done = buf->seq_next;

	for (int i = 0; i < BUFFER_QUEUES; i++)
		done = Min(done, queue_seq_from(&buf->queues[i], buf->queues[i].take));
	for (int i = 0; i < BUFFER_MAX_WRITERS; i++)
		done = Min(done, buf->writers[i].oldest_unfinished);
	return done;
}

/* Free space from the head of q: done entries whose ticket is released. */
static void
advance_queue_head(BufferQueue *q, TimestampTz now, XLogRecPtr flushed)
{
	while (q->head < q->take)
	{
		uint64		off = q->head;
		Size		to_end = q->capacity - (off % q->capacity);
		BufferEntry *e;

		if (to_end < sizeof(BufferEntry))
		{
			q->head += to_end;
			continue;
		}
		e = ENTRY_AT(q, off);
		if (e->state != ENTRY_DONE || e->done_lsn > flushed)
			break;
		if (e->kind == ENTRY_ROWS && e->ticket_slot >= 0)
		{
			TicketSlot *t = &buf->tickets[e->ticket_slot];

			if (t->generation == e->ticket_generation && t->state != SLOT_FREE)
			{
				if (slot_undecided(t))
					break;
				/* A producer that died (ERROR exit) never releases it. */
				if (!TimestampDifferenceExceeds(t->done_at, now, TICKET_ABANDON_MS) &&
					!(t->producer_pid > 0 && kill(t->producer_pid, 0) != 0 && errno == ESRCH))
					break;
				/* Its producer never came back for it. */
				t->state = SLOT_FREE;
			}
		}
		q->head += e->total;
	}
}

/*
 * After a cycle: publish this writer's oldest undecided entry (`oldest`,
 * PG_UINT64_MAX when none), free space from the head of its queue and
 * tell flush() waiters how far the writers are.
 */
void
buffer_advance_head(uint64 oldest, int64 rows_written)
{
	TimestampTz now = GetCurrentTimestamp();
	/* Read first: it takes a spinlock of its own. */
	XLogRecPtr	flushed = RecoveryInProgress() ? InvalidXLogRecPtr : GetFlushRecPtr(NULL);

	SpinLockAcquire(&buf->mutex);
	MY_WRITER->oldest_unfinished = oldest;
	advance_queue_head(MY_QUEUE, now, flushed);
	buf->done_seq = Max(buf->done_seq, compute_done_seq());
	buf->rows_written += rows_written;
	SpinLockRelease(&buf->mutex);
	ConditionVariableBroadcast(&buf->flushed_cv);
}

/* What a writer needs to decide whether to flush now (its own queue). */
void
buffer_flusher_status(int64 *events_ready, int *intents_waiting,
					  bool *flush_requested, bool *any_pending)
{
	BufferQueue *q = MY_QUEUE;

	SpinLockAcquire(&buf->mutex);
	*events_ready = q->events_ready;
	*intents_waiting = q->intents_waiting;
	*flush_requested = buf->flush_target > buf->done_seq;
	*any_pending = q->reserve != q->head;
	SpinLockRelease(&buf->mutex);
}

/* ---------------------------------------------------------------------
 * machpay.flush() support
 * ---------------------------------------------------------------------
 */

/*
 * Ask the writers to flush now; returns the seq every entry below which
 * must be decided for the caller's data to be committed, and the rows
 * written so far.  False when no writer runs.
 */
bool
buffer_request_flush(uint64 *target_seq, uint64 *rows_before)
{
	Latch	   *wake[BUFFER_MAX_WRITERS];
	int			nwake = 0;

	SpinLockAcquire(&buf->mutex);
	*target_seq = buf->seq_next;
	*rows_before = buf->rows_written;
	if (buf->seq_next > buf->flush_target)
		buf->flush_target = buf->seq_next;
	for (int i = 0; i < BUFFER_QUEUES; i++)
		nwake += queue_latches((BufferQueueId) i, wake + nwake);
	SpinLockRelease(&buf->mutex);
	set_latches(wake, nwake);
	return nwake > 0;
}

/* Sleep until done_seq reaches target; false if every writer went away. */
bool
buffer_wait_flushed(uint64 target_seq, uint64 *rows_after)
{
	bool		ok = true;

	ConditionVariablePrepareToSleep(&buf->flushed_cv);
	for (;;)
	{
		bool		done;
		bool		gone = true;

		SpinLockAcquire(&buf->mutex);
		done = buf->done_seq >= target_seq;
		for (int i = 0; i < BUFFER_MAX_WRITERS; i++)
			if (buf->writers[i].latch != NULL)
				gone = false;
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
