/*-------------------------------------------------------------------------
 * flusher.c
 *	  The flusher background worker: drains the shared-memory buffer into
 *	  the tables, one transaction per flush.
 *
 * A *batch* is the set of buffer entries one flush commits.  A flush runs
 * when machpay.flush_interval has passed, machpay.batch_size events wait,
 * payment intents wait (group commit: they never wait for the timer) or
 * machpay.flush() asks.
 *
 * The flusher is several *writers*, one process each: the intents writer
 * drains the intents queue (requests with payment intents, committed as
 * soon as they arrive, several requests per transaction when they arrive
 * together: group commit), and machpay.flush_workers telemetry writers take
 * disjoint runs of the telemetry queue, write them in parallel and commit
 * them in the order they were taken (buffer_order_wait).
 *
 * A failed flush is split in halves to commit what
 * can be committed; the rest is kept and retried with capped exponential
 * backoff; telemetry is dropped (and counted) only after
 * machpay.flush_retry_window, intents fail their ticket (503) at their deadline,
 * never silently.  On SIGTERM the buffer stops accepting and everything
 * accepted is flushed before exit.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/procsignal.h"
#include "tcop/tcopprot.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "buffer/buffer_int.h"
#include "common/machpay.h"
#include "common/stats.h"
#include "flusher/writer.h"

#define FLUSHER_NAME			"machpay flusher"
#define INTENT_WRITER_NAME		"machpay intent writer"
/* Entries one take may add to the batch (room is made before taking). */
#define FLUSH_TAKE_MAX_ENTRIES	4096
/* Largest batch, in row bytes: bounds the flusher's memory per flush. */
#define FLUSH_MAX_BATCH_BYTES	(32 * 1024 * 1024)
#define FLUSH_BACKOFF_MIN_MS	100
#define FLUSH_BACKOFF_MAX_MS	5000
/* On shutdown, keep retrying a failing flush this long before giving up. */
#define FLUSH_SHUTDOWN_WINDOW_MS 20000
/* Transactions one failed flush may spend isolating the entries at fault. */
#define FLUSH_BISECT_BUDGET		32

typedef enum FlusherState
{
	FLUSHER_WAITING,			/* for the extension */
	FLUSHER_IDLE,
	FLUSHER_FLUSHING,
	FLUSHER_BACKOFF,			/* the last flush failed */
	FLUSHER_DRAINING,			/* shutdown: flushing what was accepted */
} FlusherState;

typedef struct BatchEntry
{
	BufferEntry *entry;
	bool		include;		/* part of the current attempt */
	bool		finished;
	TimestampTz first_failure;	/* 0 = never failed */
} BatchEntry;

typedef enum AttemptResult
{
	ATTEMPT_NOTHING,
	ATTEMPT_COMMITTED,
	ATTEMPT_FAILED,
} AttemptResult;

static FlusherState state = FLUSHER_WAITING;
static BatchEntry *batch = NULL;
static int	nbatch = 0;
static int	maxbatch = 0;
static Size batch_bytes = 0;
static int	my_slot = -1;		/* writer slot: 0 intents, 1.. telemetry */
static MemoryContext flush_cxt = NULL;
static int	consecutive_failures = 0;
static TimestampTz retry_at = 0;
static TimestampTz last_flush = 0;
static TimestampTz last_attempt = 0;
static bool timer_due = false;	/* flush_interval passed: flush all that is ready */

PGDLLEXPORT void flusher_main(Datum main_arg);

/*
 * The intents writer (slot 0) and `n` telemetry writers (slots 1..n).
 * Never on a standby: they start once the server accepts writes.
 */
void
flusher_register_workers(int n)
{
	machpay_register_worker("flusher_main", INTENT_WRITER_NAME, INTENT_WRITER_NAME,
							BgWorkerStart_RecoveryFinished, 1, Int32GetDatum(0));
	for (int i = 1; i <= n && i < BUFFER_MAX_WRITERS; i++)
	{
		char		name[BGW_MAXLEN];

		snprintf(name, sizeof(name), "%s %d", FLUSHER_NAME, i);
		machpay_register_worker("flusher_main", name, FLUSHER_NAME,
								BgWorkerStart_RecoveryFinished, 1, Int32GetDatum(i));
	}
}

static void
report_state(FlusherState s, const char *detail)
{
	static const char *const names[] = {
		[FLUSHER_WAITING] = "waiting for the extension",
		[FLUSHER_IDLE] = "idle",
		[FLUSHER_FLUSHING] = "flushing",
		[FLUSHER_BACKOFF] = "retrying after a failed flush",
		[FLUSHER_DRAINING] = "draining on shutdown",
	};
	char		msg[128];

	state = s;
	snprintf(msg, sizeof(msg), "%s%s%s", names[s], detail ? ": " : "", detail ? detail : "");
	pgstat_report_activity(s == FLUSHER_FLUSHING || s == FLUSHER_DRAINING ?
						   STATE_RUNNING : STATE_IDLE, msg);
}

static void
flusher_on_exit(int code, Datum arg)
{
	buffer_flusher_detach();
}

/* Room for `more` entries in the batch: take_entry must not fail. */
static void
reserve_batch(int more)
{
	if (nbatch + more <= maxbatch)
		return;
	maxbatch = Max(maxbatch * 2, nbatch + more);
	batch = batch ? repalloc(batch, sizeof(BatchEntry) * maxbatch) :
		MemoryContextAlloc(TopMemoryContext, sizeof(BatchEntry) * maxbatch);
}

/* buffer_take callback: append to the batch (room made by reserve_batch). */
static void
take_entry(BufferEntry *entry, uint64 off, void *arg)
{
	Assert(nbatch < maxbatch);
	batch[nbatch].entry = entry;
	batch[nbatch].include = false;
	batch[nbatch].finished = false;
	batch[nbatch].first_failure = 0;
	nbatch++;
	batch_bytes += entry->rows_len;
}

/* buffer_flusher_attach callback: leftovers of a crash, not under a lock. */
static void
retake_entry(BufferEntry *entry, uint64 off, void *arg)
{
	reserve_batch(1);
	take_entry(entry, off, arg);
}

static int64
batch_events(void)
{
	int64		n = 0;

	for (int i = 0; i < nbatch; i++)
		if (!batch[i].finished)
			n += batch[i].entry->nevents;
	return n;
}

/* Forget finished entries, keeping seq order. */
static void
compact_batch(void)
{
	int			j = 0;

	batch_bytes = 0;
	for (int i = 0; i < nbatch; i++)
	{
		if (batch[i].finished)
			continue;
		batch[j++] = batch[i];
		batch_bytes += batch[i].entry->rows_len;
	}
	nbatch = j;
}

/*
 * Entries whose producer got 503 (or gave up) must not be stored.  Inside
 * an attempt the batch is not compacted: callers hold indexes into it.
 */
static void
drop_dead_tickets(bool compact)
{
	for (int i = 0; i < nbatch; i++)
	{
		if (!batch[i].finished && !buffer_entry_ticket_live(batch[i].entry))
		{
			buffer_entry_finish(batch[i].entry, false, NULL);
			batch[i].finished = true;
		}
	}
	if (compact)
		compact_batch();
}

/* Free buffer space and tell flush() waiters how far we are. */
static void
publish_progress(int64 rows)
{
	uint64		oldest = PG_UINT64_MAX;

	for (int i = 0; i < nbatch; i++)
		if (!batch[i].finished)
			oldest = Min(oldest, batch[i].entry->seq);
	buffer_advance_head(oldest, rows);
}

static void
observe_duration(TimestampTz start)
{
	long		us = (long) (GetCurrentTimestamp() - start);
	static const struct
	{
		long		le_us;
		StatCounter counter;
	}			buckets[] = {
		{1000, STAT_FLUSH_DURATION_LE_1MS},
		{5000, STAT_FLUSH_DURATION_LE_5MS},
		{10000, STAT_FLUSH_DURATION_LE_10MS},
		{50000, STAT_FLUSH_DURATION_LE_50MS},
		{100000, STAT_FLUSH_DURATION_LE_100MS},
		{500000, STAT_FLUSH_DURATION_LE_500MS},
		{1000000, STAT_FLUSH_DURATION_LE_1000MS},
	};

	for (int i = 0; i < lengthof(buckets); i++)
		if (us <= buckets[i].le_us)
			stats_add(buckets[i].counter, 1);
	stats_add(STAT_FLUSH_DURATION_LE_INF, 1);
	stats_add(STAT_FLUSH_DURATION_SUM_US, us);
}

/* buffer_order_wait: does the writer `pid` wait for a lock of ours? */
static bool
blocks_writer(pid_t pid)
{
	ArrayType  *blockers;
	Datum	   *pids;
	int			n;
	bool		found = false;

	blockers = DatumGetArrayTypeP(DirectFunctionCall1(pg_blocking_pids,
													  Int32GetDatum(pid)));
	deconstruct_array(blockers, INT4OID, sizeof(int32), true, TYPALIGN_INT,
					  &pids, NULL, &n);
	for (int i = 0; i < n && !found; i++)
		found = DatumGetInt32(pids[i]) == MyProcPid;
	return found;
}

/*
 * One transaction writing the included entries.  Returns the outcome; on
 * success the entries are finished and their tickets posted.
 */
static AttemptResult
attempt_flush(int64 *rows_out, bool quiet)
{
	BufferEntry **volatile entries;
	volatile int n = 0;
	volatile int nintents = 0;
	StringInfoData rows;
	WriteResult wr;
	IntentOutcome *volatile outcomes = NULL;
	volatile bool committed = false;
	volatile bool claimed = false;
	volatile bool retry;
	TimestampTz start = GetCurrentTimestamp();
	volatile int64 nevents = 0;
	char		detail[64];

	*rows_out = 0;
	last_attempt = start;
	MemoryContextReset(flush_cxt);
	MemoryContextSwitchTo(flush_cxt);

	do
	{
		retry = false;
		entries = palloc(sizeof(BufferEntry *) * Max(nbatch, 1));
		n = 0;
		nintents = 0;
		nevents = 0;
		initStringInfo(&rows);
		memset(&wr, 0, sizeof(wr));
		for (int i = 0; i < nbatch; i++)
		{
			BufferEntry *e = batch[i].entry;

			if (!batch[i].include || batch[i].finished)
				continue;
			entries[n++] = e;
			nintents += e->nintents;
			nevents += e->nevents;
			for (int s = 0; s < EVENT_SOURCE_COUNT; s++)
				wr.events_by_source[s] += e->events_by_source[s];
			if (e->rows_len > 0)
				appendBinaryStringInfo(&rows, BUFFER_ENTRY_ROWS(e), (int) e->rows_len);
		}
		if (n == 0)
			return ATTEMPT_NOTHING;

		snprintf(detail, sizeof(detail), INT64_FORMAT " events", nevents);
		report_state(state == FLUSHER_DRAINING ? FLUSHER_DRAINING : FLUSHER_FLUSHING, detail);

		buffer_flusher_note(FLUSH_NOTE_START);
		PG_TRY();
		{
			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			PushActiveSnapshot(GetTransactionSnapshot());
			/* The writer's results must outlive the commit. */
			MemoryContextSwitchTo(flush_cxt);

			writer_write_batch(rows.data, rows.len, &wr);
			writer_notify_ingest(&wr, "http");

			if (nintents > 0)
			{
				outcomes = palloc0(sizeof(IntentOutcome) * nintents);
				if (wr.intents && wr.nintents > 0)
					memcpy(outcomes, wr.intents,
						   sizeof(IntentOutcome) * Min(nintents, wr.nintents));
				if (wr.nintents != nintents)
					ereport(WARNING,
							(errmsg("machpay writer returned %d intent outcomes for %d intents",
									wr.nintents, nintents)));
				/* From here on producers wait for us past their deadline. */
				if (!buffer_claim_tickets(entries, n))
				{
					retry = true;
					AbortCurrentTransaction();
					/* The tables took the rows: the database is writable. */
					buffer_flusher_note(FLUSH_NOTE_WRITABLE);
				}
				else
					claimed = true;
			}
			/* Runs taken before ours become visible first. */
			if (!retry && !buffer_order_wait(blocks_writer))
			{
				/* An earlier run waits for our rows: step back, behind it. */
				if (claimed)
					buffer_unclaim_tickets(entries, n);
				claimed = false;
				retry = true;
				AbortCurrentTransaction();
			}
			if (!retry)
			{
				PopActiveSnapshot();
				CommitTransactionCommand();
				committed = true;
				buffer_flusher_note(FLUSH_NOTE_WRITABLE);
			}
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(flush_cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			MemoryContextSwitchTo(flush_cxt);
			if (claimed)
				buffer_unclaim_tickets(entries, n);
			buffer_flusher_note(FLUSH_NOTE_FAILED);
			ereport(quiet ? DEBUG1 : LOG,
					(errmsg("machpay flush of " INT64_FORMAT " events failed: %s",
							nevents, edata->message),
					 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
					 errhint("The batch is kept and retried.")));
			FreeErrorData(edata);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(flush_cxt);

		if (retry)
		{
			/* Some request was answered 503 meanwhile: write without it. */
			drop_dead_tickets(false);
			MemoryContextReset(flush_cxt);
		}
	} while (retry);

	if (!committed)
	{
		if (!quiet)
			stats_add(STAT_FLUSH_FAILURES, 1);
		return ATTEMPT_FAILED;
	}

	/* Hand each entry its slice of the batch-order outcomes. */
	{
		int			pos = 0;

		for (int i = 0; i < nbatch; i++)
		{
			BufferEntry *e = batch[i].entry;

			if (!batch[i].include || batch[i].finished)
				continue;
			buffer_entry_finish(e, true, e->nintents > 0 ? outcomes + pos : NULL);
			pos += e->nintents;
			batch[i].finished = true;
		}
	}
	for (int k = ROW_METRIC; k <= ROW_KIND_MAX; k++)
		if (k != ROW_CONFIG)
			*rows_out += wr.nrows[k];
	stats_add(STAT_FLUSHES, 1);
	stats_add(STAT_FLUSH_EVENTS, nevents);
	observe_duration(start);
	last_flush = GetCurrentTimestamp();
	return ATTEMPT_COMMITTED;
}

static void
include_range(int lo, int hi)
{
	for (int i = 0; i < nbatch; i++)
		batch[i].include = !batch[i].finished && i >= lo && i < hi;
}

/*
 * After a failed flush: commit what can be committed by halving the batch,
 * so that one entry the tables refuse (a constraint, a trigger) holds up
 * only itself.  Bounded per cycle; what is left waits for the next retry.
 */
static int64
bisect_flush(int lo, int hi, int *budget)
{
	int64		rows = 0;
	int			mid;
	int			live = 0;

	for (int i = lo; i < hi; i++)
		if (!batch[i].finished)
			live++;
	if (live == 0 || *budget <= 0)
		return 0;
	if (hi - lo > 1 || live > 1)
	{
		mid = lo + (hi - lo) / 2;
		for (int half = 0; half < 2; half++)
		{
			int			a = half == 0 ? lo : mid;
			int			b = half == 0 ? mid : hi;
			int64		r = 0;

			if (*budget <= 0)
				break;
			(*budget)--;
			include_range(a, b);
			if (attempt_flush(&r, true) == ATTEMPT_COMMITTED)
				rows += r;
			else if (b - a > 1)
				rows += bisect_flush(a, b, budget);
		}
	}
	return rows;
}

static void
include_entries(bool intents_only)
{
	for (int i = 0; i < nbatch; i++)
		batch[i].include = !batch[i].finished &&
			(!intents_only || batch[i].entry->nintents > 0);
}

/* Telemetry that failed for longer than the retry window is given up. */
static void
drop_expired_telemetry(TimestampTz now, int window_ms)
{
	int64		dropped = 0;
	int			nentries = 0;

	for (int i = 0; i < nbatch; i++)
	{
		BatchEntry *b = &batch[i];

		if (b->finished || b->entry->nintents > 0)
			continue;
		if (b->first_failure == 0)
			b->first_failure = now;
		else if (TimestampDifferenceExceeds(b->first_failure, now, window_ms))
		{
			dropped += b->entry->nevents;
			nentries++;
			buffer_entry_finish(b->entry, false, NULL);
			b->finished = true;
		}
	}
	if (nentries > 0)
	{
		stats_add(STAT_EVENTS_DROPPED, dropped);
		ereport(WARNING,
				(errmsg("machpay flusher dropped " INT64_FORMAT " buffered events that could not be written for %d s",
						dropped, window_ms / 1000)));
	}
	compact_batch();
}

/*
 * One flush cycle: take what is ready, drop what may not be stored, write.
 * While backing off, intents are still tried on their own (they cannot
 * wait), at most every FLUSH_BACKOFF_MIN_MS.
 */
static AttemptResult
flush_cycle_runs(bool draining)
{
	AttemptResult res;
	int64		rows = 0;
	bool		has_intents = false;
	bool		full_attempt = true;
	TimestampTz now;

	/*
	 * About batch_size events per transaction: bigger batches gain little
	 * and make intents arriving meanwhile wait longer.
	 */
	if (batch_bytes < FLUSH_MAX_BATCH_BYTES)
	{
		reserve_batch(FLUSH_TAKE_MAX_ENTRIES);
		(void) buffer_take(FLUSH_MAX_BATCH_BYTES - batch_bytes,
						   Max(machpay_batch_size - batch_events(), 1),
						   FLUSH_TAKE_MAX_ENTRIES, take_entry, NULL);
	}
	drop_dead_tickets(true);
	if (nbatch == 0)
	{
		publish_progress(0);
		return ATTEMPT_NOTHING;
	}
	for (int i = 0; i < nbatch; i++)
	{
		if (batch[i].entry->nintents > 0)
			has_intents = true;
	}

	now = GetCurrentTimestamp();
	if (consecutive_failures > 0 && now < retry_at)
	{
		/* Backing off: only intents, which cannot wait, and not in a loop. */
		if (!has_intents ||
			!TimestampDifferenceExceeds(last_attempt, now, FLUSH_BACKOFF_MIN_MS))
			return ATTEMPT_NOTHING;
		include_entries(true);
		res = attempt_flush(&rows, false);
		full_attempt = false;
	}
	else
	{
		include_entries(false);
		res = attempt_flush(&rows, false);
		if (res == ATTEMPT_FAILED && nbatch > 1)
		{
			int			budget = FLUSH_BISECT_BUDGET;

			rows += bisect_flush(0, nbatch, &budget);
			res = ATTEMPT_COMMITTED;
			for (int i = 0; i < nbatch; i++)
				if (!batch[i].finished)
					res = ATTEMPT_FAILED;
		}
	}

	if (res == ATTEMPT_FAILED || (!full_attempt && nbatch > 0))
	{
		int			backoff;

		if (res == ATTEMPT_FAILED || consecutive_failures == 0)
			consecutive_failures++;
		backoff = FLUSH_BACKOFF_MIN_MS << Min(consecutive_failures - 1, 10);
		backoff = Min(backoff, FLUSH_BACKOFF_MAX_MS);
		/* Jitter spreads retries of a recurring failure. */
		backoff = backoff / 2 + (int) (random() % (backoff / 2 + 1));
		if (res == ATTEMPT_FAILED)
			retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff);
		drop_expired_telemetry(GetCurrentTimestamp(),
							   draining ? FLUSH_SHUTDOWN_WINDOW_MS :
							   machpay_flush_retry_window_s * 1000);
	}
	else if (res == ATTEMPT_COMMITTED && full_attempt && consecutive_failures > 0)
	{
		ereport(LOG, (errmsg("machpay flusher recovered after %d failed flushes",
							 consecutive_failures)));
		consecutive_failures = 0;
	}
	compact_batch();
	publish_progress(rows);
	MemoryContextReset(flush_cxt);
	MemoryContextSwitchTo(TopMemoryContext);
	return res;
}

/*
 * A cycle; once nothing of the batch is left its run is settled and later
 * runs may commit.  A batch that failed keeps its run: later runs wait for
 * its retry (within BUFFER_ORDER_WAIT_MS), so a passing failure does not
 * reorder what readers see.
 */
static AttemptResult
flush_cycle(bool draining)
{
	AttemptResult res = flush_cycle_runs(draining);

	if (nbatch == 0)
		buffer_order_settle();
	return res;
}

/*
 * SIGTERM: refuse new puts, wait for producers still copying, then flush
 * everything accepted.  A database that keeps failing is retried for a
 * bounded time so that shutdown cannot hang.
 */
static void
drain_and_exit(void)
{
	TimestampTz start = GetCurrentTimestamp();

	buffer_begin_shutdown();
	report_state(FLUSHER_DRAINING, NULL);
	consecutive_failures = 0;
	for (;;)
	{
		int64		ready;
		int			intents;
		bool		requested;
		bool		pending;
		AttemptResult res;

		res = flush_cycle(true);
		buffer_flusher_status(&ready, &intents, &requested, &pending);
		if (res != ATTEMPT_FAILED && nbatch == 0 && ready == 0 &&
			!buffer_has_reserved())
			break;
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(),
									   FLUSH_SHUTDOWN_WINDOW_MS + FLUSH_BACKOFF_MAX_MS))
		{
			ereport(WARNING,
					(errmsg("machpay flusher exiting with %d buffered entries not written",
							nbatch)));
			break;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 res == ATTEMPT_FAILED ? 200 : 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (ProcSignalBarrierPending)
			ProcessProcSignalBarrier();
	}
	ereport(LOG, (errmsg("machpay flusher stopped after flushing the buffer")));
	proc_exit(0);
}

void
flusher_main(Datum main_arg)
{
	const char *role;

	my_slot = DatumGetInt32(main_arg);
	role = my_slot == 0 ? INTENT_WRITER_NAME : FLUSHER_NAME;
	machpay_worker_attach(role);
	before_shmem_exit(flusher_on_exit, (Datum) 0);

	if (!buffer_available())
		proc_exit(0);
	report_state(FLUSHER_WAITING, NULL);
	if (!machpay_worker_wait_for_extension(role))
		proc_exit(0);

	flush_cxt = AllocSetContextCreate(TopMemoryContext, "machpay flush",
									  ALLOCSET_DEFAULT_SIZES);
	/* What this slot took before a crash of this process comes back first. */
	(void) buffer_flusher_attach(my_slot, my_slot == 0 ? QUEUE_INTENTS : QUEUE_TELEMETRY,
								 !RecoveryInProgress(), retake_entry, NULL);
	last_flush = GetCurrentTimestamp();
	report_state(FLUSHER_IDLE, NULL);

	for (;;)
	{
		int64		ready;
		int			intents;
		bool		requested;
		bool		pending;
		bool		flush_now;
		long		timeout;
		TimestampTz now;

		/*
		 * DROP DATABASE and others wait until every process absorbed their
		 * barrier.  Only barriers: a query cancel must not end the flusher.
		 */
		if (ProcSignalBarrierPending)
			ProcessProcSignalBarrier();
		if (ShutdownRequestPending)
			drain_and_exit();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		buffer_flusher_status(&ready, &intents, &requested, &pending);
		now = GetCurrentTimestamp();
		flush_now = requested || intents > 0 || ready >= machpay_batch_size ||
			(nbatch > 0 && now >= retry_at);
		/*
		 * The timer: entries with no events (dead letters only) count too.
		 * Once due, everything ready then is flushed, batch after batch.
		 */
		if (pending && TimestampDifferenceExceeds(last_flush, now, machpay_flush_interval_ms))
		{
			timer_due = true;
			last_flush = now;
		}
		if (timer_due && pending)
			flush_now = true;

		if (flush_now)
		{
			AttemptResult res = flush_cycle(false);

			if (res == ATTEMPT_COMMITTED)
				continue;		/* more may be waiting */
			timer_due = false;
		}
		else
			publish_progress(0);	/* released tickets free space */

		if (consecutive_failures > 0)
			report_state(FLUSHER_BACKOFF, NULL);
		else
			report_state(FLUSHER_IDLE, NULL);

		now = GetCurrentTimestamp();
		if (consecutive_failures > 0 && nbatch > 0)
			timeout = Max(1, (long) ((retry_at - now) / 1000));
		else
		{
			long		since = (long) ((now - last_flush) / 1000);

			timeout = Max(1, machpay_flush_interval_ms - since);
		}
		/* Intents failing in backoff, tickets to reclaim: look again soon. */
		if (intents > 0 || pending)
			timeout = Min(timeout, 100);
		timeout = Min(timeout, machpay_flush_interval_ms);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
