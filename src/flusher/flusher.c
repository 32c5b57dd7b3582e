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
 * Failures are of two kinds.  When the tables refuse some rows (a *data*
 * error: a constraint, a trigger, a value an input function rejects) the
 * batch is split at once, intents first, until the entry at fault is
 * *isolated*: alone it still fails.  An isolated entry's intents are tried
 * on their own (committed: 200; refused: 503 now); its telemetry is copied
 * out of the ring (so it holds no buffer space) and retried alone with its
 * own backoff until machpay.flush_retry_window, then dropped and counted.
 * Nothing else waits for it.  When the *database* fails (disk full, lock
 * or resource errors) everything is kept and retried with capped
 * exponential backoff, intents alone every FLUSH_BACKOFF_MIN_MS until
 * their deadline (503), telemetry until the retry window (dropped and
 * counted), never silently.  On SIGTERM the buffer stops accepting and
 * everything accepted is flushed before exit.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
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

#include "buffer/buffer.h"
#include "common/machpay.h"
#include "notify/notify.h"
#include "common/stats.h"
#include "flusher/bulk_insert.h"
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
/* Isolated entries retried per cycle, at most. */
#define FLUSH_ISOLATED_RETRIES	8
/* Telemetry of isolated entries kept in the flusher's memory, at most. */
#define FLUSH_MAX_HELD_BYTES	(64 * 1024 * 1024)

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
	BufferEntry *entry;			/* in the ring, or a held copy (held) */
	bool		include;		/* part of the current attempt */
	bool		intents_part;	/* the attempt writes only its intent rows */
	bool		finished;
	bool		isolated;		/* fails alone on a data error: tried alone */
	bool		held;			/* entry is our copy, its ring space is free */
	int			failures;		/* isolated: attempts failed, for its backoff */
	TimestampTz retry_at;		/* isolated: next attempt */
	TimestampTz last_try;		/* isolated: latest attempt */
	TimestampTz first_failure;	/* 0 = never failed */
} BatchEntry;

typedef enum AttemptResult
{
	ATTEMPT_NOTHING,
	ATTEMPT_COMMITTED,
	ATTEMPT_FAILED,				/* the database failed */
	ATTEMPT_REFUSED,			/* the tables refused rows: a data error */
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
static Size held_bytes = 0;		/* rows of held entries */
static bool commit_durably = false; /* flush() waits or we drain: no async commit */
static char last_error[256];	/* message of the latest failed attempt */
static XLogRecPtr release_lsn = InvalidXLogRecPtr;	/* entries wait for this flush */

PGDLLEXPORT void flusher_main(Datum main_arg);

static bool is_data_error(int sqlerrcode);
static void hold_telemetry(BatchEntry *b, const IntentOutcome *outcomes);

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

/*
 * A flush waits for a table lock at most machpay.flush_lock_timeout: a
 * table another session holds locked then fails the attempt like any
 * database failure, and intents are committed on their own meanwhile.
 */
static void
apply_writer_settings(void)
{
	char		value[32];

	snprintf(value, sizeof(value), "%d", machpay_flush_lock_timeout_ms);
	SetConfigOption("lock_timeout", value, PGC_SUSET, PGC_S_OVERRIDE);
	/* Telemetry writers pace their WAL for the intents writer's commits. */
	if (my_slot > 0)
		bulk_insert_set_wal_step((Size) machpay_telemetry_wal_step_kb * 1024);
}

/*
 * The commit itself waits without machpay.flush_lock_timeout.  A commit
 * that notifies takes PostgreSQL's notify lock, which any other notifying
 * commit holds until its WAL is flushed; on a slow disk that wait passed
 * the timeout, and a batch written in full was rolled back and retried,
 * over and over, until /readyz said 503 and batches reached the drop
 * window.  Whoever holds that lock is already committing.
 */
static void
commit_without_lock_timeout(void)
{
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	PG_TRY();
	{
		CommitTransactionCommand();
	}
	PG_FINALLY();
	{
		apply_writer_settings();
	}
	PG_END_TRY();
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
	memset(&batch[nbatch], 0, sizeof(BatchEntry));
	batch[nbatch].entry = entry;
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
		if (!batch[i].finished && !batch[i].held)
			n += batch[i].entry->nevents;
	return n;
}

/* Forget finished entries, keeping seq order. */
static void
compact_batch(void)
{
	int			j = 0;

	batch_bytes = 0;
	held_bytes = 0;
	for (int i = 0; i < nbatch; i++)
	{
		if (batch[i].finished)
		{
			if (batch[i].held)
				pfree(batch[i].entry);
			continue;
		}
		batch[j++] = batch[i];
		if (batch[i].held)
			held_bytes += batch[i].entry->rows_len;
		else
			batch_bytes += batch[i].entry->rows_len;
	}
	nbatch = j;
}

/*
 * Decide an entry's fate.  A held entry is our own copy: it has no ticket
 * and its ring space was freed when it was copied.
 */
static void
finish_entry(BatchEntry *b, bool committed, const IntentOutcome *outcomes)
{
	if (!b->held)
		buffer_entry_finish(b->entry, committed, outcomes);
	b->finished = true;
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

/*
 * How a telemetry-only transaction commits.  Nobody waits for its answer
 * (the 202s went out when it was buffered), so it does not wait for its
 * WAL flush either (synchronous_commit off, for this transaction only):
 * the writer goes on with the next batch while the WAL writer, or the next
 * payment intent's commit, flushes it.  With telemetry_synchronous_commit
 * on (the default) its entries keep their buffer space until that flush
 * (returns true: buffer_entry_finish_at_lsn), so a crash still loses at
 * most the buffer (SPEC §7).  Off frees the space at commit: a crash may
 * then lose the last batches committed as well.  With a synchronous
 * standby the commit waits as the server says, so a failover loses no
 * batch whose space was freed.  Intents, flush() and the drain on
 * shutdown always commit with the server's setting.
 */
static bool
commit_telemetry_without_waiting(bool telemetry_only)
{
	bool		release_at_flush;

	if (!telemetry_only || synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		return false;
	release_at_flush = machpay_telemetry_synchronous_commit &&
		!(SyncRepRequested() && SyncRepStandbyNames != NULL &&
		  SyncRepStandbyNames[0] != '\0');
	if (release_at_flush || !machpay_telemetry_synchronous_commit)
		(void) set_config_option("synchronous_commit", "off", PGC_SUSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	return release_at_flush;
}

/*
 * Before the writer sleeps: flush the WAL its released-at-flush entries
 * wait for (the WAL writer may not have yet), so their space is free for
 * the next requests; under load the WAL writer does it meanwhile.
 */
static void
release_flushed_entries(void)
{
	if (release_lsn == InvalidXLogRecPtr)
		return;
	XLogFlush(release_lsn);
	release_lsn = InvalidXLogRecPtr;
	publish_progress(0);
}

/*
 * A telemetry-only transaction publishes its notifications (`ingest`,
 * `config`, `gateway`/`sdk`) after its commit, in a transaction of their
 * own: a notifying commit holds PostgreSQL's notify lock until its WAL is
 * flushed, and payment intents committing beside it (they notify too)
 * would wait for a whole batch's flush.  The notify-only transaction
 * writes no WAL but its commit record, so it does not wait for a flush;
 * it waits only for a notifying intent commit, which is short.  A crash
 * between the two commits loses those notifications, never rows.
 */
static void
defer_telemetry_notifications(bool telemetry_only)
{
	if (telemetry_only)
		machpay_notify_defer();
}

static void
publish_deferred_notifications(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	if (!machpay_notify_has_deferred())
		return;
	PG_TRY();
	{
		StartTransactionCommand();
		(void) set_config_option("synchronous_commit", "off", PGC_SUSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
		(void) machpay_notify_queue_deferred();
		commit_without_lock_timeout();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING,
				(errmsg("machpay flusher could not publish the notifications of a committed batch: %s",
						edata->message),
				 errdetail("The batch's rows are stored; only its events on machpay_events are lost.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
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

/* How the transaction of an attempt ended. */
typedef enum AttemptTxn
{
	TXN_COMMITTED,
	TXN_STEPPED_BACK,			/* rolled back on purpose: write the batch again */
	TXN_FAILED,					/* an error: the database failed */
	TXN_REFUSED,				/* an error: the tables refused rows */
} AttemptTxn;

/*
 * One attempt: the included entries, their rows, and what the transaction
 * made of them.  Lives in the caller's frame and is reached by pointer, so
 * the PG_TRY of attempt_transaction() needs no volatile locals.
 */
typedef struct FlushAttempt
{
	BufferEntry **entries;
	int			n;
	int			nintents;
	int64		nevents;
	StringInfoData rows;
	WriteResult wr;
	IntentOutcome *outcomes;	/* one per intent, in batch order */
	bool		claimed;		/* the entries' tickets are claimed */
	bool		release_at_flush;	/* telemetry committed without waiting */
	XLogRecPtr	commit_end;		/* its commit record's end */
	AttemptTxn	txn;
} FlushAttempt;

/* The included, unfinished entries and their rows, in batch order. */
static int
collect_attempt(FlushAttempt *a)
{
	memset(a, 0, sizeof(*a));
	a->entries = palloc(sizeof(BufferEntry *) * Max(nbatch, 1));
	initStringInfo(&a->rows);
	for (int i = 0; i < nbatch; i++)
	{
		BufferEntry *e = batch[i].entry;

		if (!batch[i].include || batch[i].finished)
			continue;
		a->entries[a->n++] = e;
		a->nintents += e->nintents;
		if (batch[i].intents_part)
		{
			/* only the request's intents: its telemetry is at fault */
			a->nevents += e->events_by_source[SOURCE_PAYMENT_INTENT];
			a->wr.events_by_source[SOURCE_PAYMENT_INTENT] +=
				e->events_by_source[SOURCE_PAYMENT_INTENT];
			(void) rowbuf_copy_kind(&a->rows, BUFFER_ENTRY_ROWS(e), e->rows_len,
									ROW_INTENT, true);
			continue;
		}
		a->nevents += e->nevents;
		for (int s = 0; s < EVENT_SOURCE_COUNT; s++)
			a->wr.events_by_source[s] += e->events_by_source[s];
		if (e->rows_len > 0)
			appendBinaryStringInfo(&a->rows, BUFFER_ENTRY_ROWS(e), (int) e->rows_len);
	}
	return a->n;
}

/*
 * The intents' outcomes as the writer gave them, and the entries' tickets
 * claimed: from then on producers wait for us past their deadline.  False
 * when a ticket was given up meanwhile (its request was answered 503).
 */
static bool
claim_intent_tickets(FlushAttempt *a)
{
	/* writer_write_batch() made this commit durable (writer.c). */
	a->outcomes = palloc0(sizeof(IntentOutcome) * a->nintents);
	if (a->wr.intents && a->wr.nintents > 0)
		memcpy(a->outcomes, a->wr.intents,
			   sizeof(IntentOutcome) * Min(a->nintents, a->wr.nintents));
	if (a->wr.nintents != a->nintents)
		ereport(WARNING,
				(errmsg("machpay writer returned %d intent outcomes for %d intents",
						a->wr.nintents, a->nintents)));
	if (!buffer_claim_tickets(a->entries, a->n))
		return false;
	a->claimed = true;
	return true;
}

/* Write, claim, wait for earlier runs, commit: a->txn says how it ended. */
static void
write_and_commit(FlushAttempt *a)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	a->release_at_flush = commit_telemetry_without_waiting(a->nintents == 0 &&
														   !commit_durably);
	defer_telemetry_notifications(a->nintents == 0);
	PushActiveSnapshot(GetTransactionSnapshot());
	/* The writer's results must outlive the commit. */
	MemoryContextSwitchTo(flush_cxt);

	writer_write_batch(a->rows.data, a->rows.len, &a->wr);
	writer_notify_ingest(&a->wr, "http");

	if (a->nintents > 0 && !claim_intent_tickets(a))
	{
		a->txn = TXN_STEPPED_BACK;
		AbortCurrentTransaction();
		/* The tables took the rows: the database is writable. */
		buffer_flusher_note(FLUSH_NOTE_WRITABLE);
		return;
	}
	/* Runs taken before ours become visible first. */
	if (!buffer_order_wait(blocks_writer))
	{
		/* An earlier run waits for our rows: step back, behind it. */
		if (a->claimed)
			buffer_unclaim_tickets(a->entries, a->n);
		a->claimed = false;
		a->txn = TXN_STEPPED_BACK;
		AbortCurrentTransaction();
		return;
	}
	PopActiveSnapshot();
	commit_without_lock_timeout();
	a->commit_end = XactLastCommitEnd;
	a->txn = TXN_COMMITTED;
	buffer_flusher_note(FLUSH_NOTE_WRITABLE);
}

/* The error that ended an attempt's transaction: roll back, log, keep the batch. */
static void
attempt_failed(FlushAttempt *a, bool quiet)
{
	ErrorData  *edata;
	bool		refused;

	MemoryContextSwitchTo(flush_cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(flush_cxt);
	if (a->claimed)
		buffer_unclaim_tickets(a->entries, a->n);
	refused = is_data_error(edata->sqlerrcode);
	if (a->txn != TXN_COMMITTED && a->txn != TXN_STEPPED_BACK)
		a->txn = refused ? TXN_REFUSED : TXN_FAILED;
	buffer_flusher_note(refused ? FLUSH_NOTE_REFUSED : FLUSH_NOTE_FAILED);
	strlcpy(last_error, edata->message, sizeof(last_error));
	ereport(quiet ? DEBUG1 : LOG,
			(errmsg("machpay flush of " INT64_FORMAT " events failed: %s",
					a->nevents, edata->message),
			 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
			 errhint("The batch is kept and retried.")));
	FreeErrorData(edata);
}

/* The one transaction of an attempt, with any error it raises caught. */
static void
attempt_transaction(FlushAttempt *a, bool quiet)
{
	a->txn = TXN_FAILED;
	buffer_flusher_note(FLUSH_NOTE_START);
	PG_TRY();
	{
		write_and_commit(a);
	}
	PG_CATCH();
	{
		attempt_failed(a, quiet);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(flush_cxt);
}

/* After the commit: each entry gets its slice of the batch-order outcomes. */
static void
finish_committed(FlushAttempt *a, int64 *rows_out, TimestampTz start)
{
	int			pos = 0;

	for (int i = 0; i < nbatch; i++)
	{
		BufferEntry *e = batch[i].entry;

		if (!batch[i].include || batch[i].finished)
			continue;
		if (batch[i].intents_part)
			hold_telemetry(&batch[i], a->outcomes + pos);
		else if (a->release_at_flush && !batch[i].held)
		{
			buffer_entry_finish_at_lsn(e, a->commit_end);
			batch[i].finished = true;
			release_lsn = Max(release_lsn, a->commit_end);
		}
		else
			finish_entry(&batch[i], true, e->nintents > 0 ? a->outcomes + pos : NULL);
		pos += e->nintents;
	}
	for (int k = ROW_METRIC; k <= ROW_KIND_MAX; k++)
		if (k != ROW_CONFIG)
			*rows_out += a->wr.nrows[k];
	stats_add(STAT_FLUSHES, 1);
	stats_add(STAT_FLUSH_EVENTS, a->nevents);
	observe_duration(start);
	last_flush = GetCurrentTimestamp();
}

/*
 * One transaction writing the included entries.  Returns the outcome; on
 * success the entries are finished and their tickets posted.
 */
static AttemptResult
attempt_flush(int64 *rows_out, bool quiet)
{
	FlushAttempt a;
	TimestampTz start = GetCurrentTimestamp();
	char		detail[64];

	*rows_out = 0;
	last_attempt = start;
	MemoryContextReset(flush_cxt);
	MemoryContextSwitchTo(flush_cxt);

	for (;;)
	{
		if (collect_attempt(&a) == 0)
			return ATTEMPT_NOTHING;
		snprintf(detail, sizeof(detail), INT64_FORMAT " events", a.nevents);
		report_state(state == FLUSHER_DRAINING ? FLUSHER_DRAINING : FLUSHER_FLUSHING, detail);

		attempt_transaction(&a, quiet);
		if (a.txn != TXN_STEPPED_BACK)
			break;
		/* Some request was answered 503 meanwhile: write without it. */
		drop_dead_tickets(false);
		MemoryContextReset(flush_cxt);
	}

	/*
	 * A commit that waits for a synchronous standby stops waiting, and
	 * returns as if done, when the postmaster dies: the standby may not have
	 * it, and a failover may lose it.  Answer nothing then; the requests end
	 * with their connections.
	 */
	if (a.txn == TXN_COMMITTED && !PostmasterIsAlive())
		proc_exit(1);
	if (a.txn == TXN_COMMITTED)
		publish_deferred_notifications();

	if (a.txn != TXN_COMMITTED)
	{
		if (!quiet)
			stats_add(STAT_FLUSH_FAILURES, 1);
		return a.txn == TXN_REFUSED ? ATTEMPT_REFUSED : ATTEMPT_FAILED;
	}
	finish_committed(&a, rows_out, start);
	return ATTEMPT_COMMITTED;
}

/*
 * A data error is about the rows: the tables (a constraint, a trigger, an
 * input function) refused some of them, and other rows would go in.
 * Anything else (disk full, out of memory, a lock or a cancel, a read-only
 * database) is about the database and says nothing about the rows.
 */
static bool
is_data_error(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_DATA_EXCEPTION:	/* 22: value out of range, bad input */
		case ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION:	/* 23 */
		case ERRCODE_TRIGGERED_ACTION_EXCEPTION:	/* 09 */
		case ERRCODE_PLPGSQL_ERROR: /* P0: RAISE in a trigger */
		case ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION:	/* 42: a trigger's bug */
			return true;
		default:
			return false;
	}
}

/* Backoff of the n-th failure in a row, with jitter. */
static int
backoff_ms(int failures)
{
	int			backoff = FLUSH_BACKOFF_MIN_MS << Min(Max(failures, 1) - 1, 10);

	backoff = Min(backoff, FLUSH_BACKOFF_MAX_MS);
	/* Jitter spreads retries of a recurring failure. */
	return backoff / 2 + (int) (random() % (backoff / 2 + 1));
}

/* Count and log telemetry given up. */
static void
report_dropped(int64 events, int nentries, const char *why)
{
	if (nentries == 0)
		return;
	stats_add(STAT_EVENTS_DROPPED, events);
	ereport(WARNING,
			(errmsg("machpay flusher dropped " INT64_FORMAT " buffered events %s",
					events, why)));
}

/* Held telemetry is bounded: the oldest goes first, counted. */
static void
make_room_for_held(Size bytes)
{
	int64		dropped = 0;
	int			nentries = 0;

	for (int i = 0; i < nbatch && held_bytes + bytes > FLUSH_MAX_HELD_BYTES; i++)
	{
		if (!batch[i].held || batch[i].finished)
			continue;
		dropped += batch[i].entry->nevents;
		nentries++;
		held_bytes -= batch[i].entry->rows_len;
		finish_entry(&batch[i], false, NULL);
	}
	report_dropped(dropped, nentries, "held for retry, to bound the flusher's memory");
}

/*
 * An entry refused alone: from now on it is tried alone.  Its telemetry
 * rows (all of them but the intents, which are decided already) are copied
 * out of the ring so they hold no buffer space while they are retried.
 * With outcomes, the entry's intents were committed in this attempt: post
 * them (the request is answered 200).
 */
static void
hold_telemetry(BatchEntry *b, const IntentOutcome *outcomes)
{
	BufferEntry *e = b->entry;
	StringInfoData rows;
	BufferEntry *copy;
	int			nrows;

	initStringInfo(&rows);
	nrows = rowbuf_copy_kind(&rows, BUFFER_ENTRY_ROWS(e), e->rows_len,
							 ROW_INTENT, false);
	b->intents_part = false;
	if (e->nintents > 0)
		finish_entry(b, outcomes != NULL, outcomes);
	if (nrows == 0 || (b->finished && outcomes == NULL))
	{
		/* nothing but intents; or the intents failed: nothing is stored */
		if (!b->finished)
			finish_entry(b, false, NULL);
		pfree(rows.data);
		return;
	}

	make_room_for_held(rows.len);
	copy = buffer_entry_copy_telemetry(e, rows.data, rows.len);
	pfree(rows.data);

	/* The ring's entry is done with: its space can be freed. */
	if (!b->finished)
		buffer_entry_finish(e, true, NULL);
	b->entry = copy;
	b->held = true;
	b->finished = false;
	held_bytes += copy->rows_len;
}

static void
include_none(void)
{
	for (int i = 0; i < nbatch; i++)
	{
		batch[i].include = false;
		batch[i].intents_part = false;
	}
}

static void
include_set(const int *idx, int n)
{
	include_none();
	for (int k = 0; k < n; k++)
		batch[idx[k]].include = !batch[idx[k]].finished;
}

/*
 * Entries not isolated (those are tried alone), with intents only or all;
 * into idx (room for nbatch).  Returns how many.
 */
static int
collect_entries(int *idx, bool intents_only)
{
	int			n = 0;

	for (int i = 0; i < nbatch; i++)
		if (!batch[i].finished && !batch[i].isolated &&
			(!intents_only || batch[i].entry->nintents > 0))
			idx[n++] = i;
	return n;
}

static bool
has_telemetry_rows(const BufferEntry *e)
{
	for (int k = ROW_METRIC; k <= ROW_KIND_MAX; k++)
		if (k != ROW_INTENT && e->nrows[k] > 0)
			return true;
	return false;
}

/*
 * The entry batch[i] failed alone on a data error.  Its intents cannot
 * wait: try them without the telemetry of their request (committed: the
 * request gets 200; refused: 503 now).  Its telemetry is held and retried
 * alone.  Returns the attempt's outcome when the database failed meanwhile.
 */
static AttemptResult
isolate_entry(int i, int64 *rows)
{
	BatchEntry *b = &batch[i];
	BufferEntry *e = b->entry;
	AttemptResult res = ATTEMPT_REFUSED;
	int64		r = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (e->nintents > 0 && has_telemetry_rows(e))
	{
		include_none();
		b->include = true;
		b->intents_part = true;
		res = attempt_flush(&r, true);
		*rows += r;
		if (res == ATTEMPT_FAILED || res == ATTEMPT_NOTHING)
			return res;			/* the database: keep it whole */
		/* committed: attempt_flush held the telemetry already */
	}
	if (res == ATTEMPT_REFUSED)
	{
		if (e->nintents > 0)
		{
			ereport(LOG,
					(errmsg("machpay flusher refused a request's %d payment intents: %s",
							e->nintents, last_error),
					 errdetail("The request is answered 503 and nothing of it is stored.")));
			finish_entry(b, false, NULL);
			return ATTEMPT_REFUSED;
		}
		hold_telemetry(b, NULL);
	}
	if (b->finished)
		return ATTEMPT_REFUSED;
	b->isolated = true;
	b->failures = 1;
	b->first_failure = now;
	b->retry_at = TimestampTzPlusMilliseconds(now, backoff_ms(1));
	b->last_try = now;
	ereport(LOG,
			(errmsg("machpay flusher isolated %d buffered events the tables refuse: %s",
					b->entry->nevents, last_error),
			 errdetail("They are retried alone for machpay.flush_retry_window, then dropped and counted; nothing else waits for them.")));
	return ATTEMPT_REFUSED;
}

/*
 * The entries idx[0..n) failed together on a data error: split them in
 * halves until each entry at fault is alone.  Bounded by *budget
 * transactions; returns ATTEMPT_FAILED if the database failed meanwhile
 * (then splitting is pointless), else ATTEMPT_REFUSED.
 */
static AttemptResult
bisect_flush(int *idx, int n, int *budget, int64 *rows)
{
	int			half = n / 2;
	bool		first_committed = false;

	if (n == 1)
		return isolate_entry(idx[0], rows);
	for (int h = 0; h < 2; h++)
	{
		int		   *part = h == 0 ? idx : idx + half;
		int			m = h == 0 ? half : n - half;
		AttemptResult res;
		int64		r = 0;

		if (m == 0)
			continue;
		/* The first half went in: the fault is in the second, no need to try it whole. */
		if (h == 1 && first_committed)
			res = ATTEMPT_REFUSED;
		else
		{
			if (*budget <= 0)
				return ATTEMPT_REFUSED;
			(*budget)--;
			include_set(part, m);
			res = attempt_flush(&r, true);
			*rows += r;
		}
		if (res == ATTEMPT_COMMITTED)
			first_committed = (h == 0);
		else if (res == ATTEMPT_FAILED)
			return ATTEMPT_FAILED;
		else if (res == ATTEMPT_REFUSED &&
				 bisect_flush(part, m, budget, rows) == ATTEMPT_FAILED)
			return ATTEMPT_FAILED;
	}
	return ATTEMPT_REFUSED;
}

/*
 * After an attempt refused on a data error: isolate the entries at fault
 * now, intents first, so they hold up nothing.
 */
static AttemptResult
isolate_refused(int64 *rows)
{
	/* not in flush_cxt: every attempt resets that */
	int		   *idx = MemoryContextAlloc(TopMemoryContext, sizeof(int) * Max(nbatch, 1));
	int			budget = FLUSH_BISECT_BUDGET;
	int			n;
	int			nall;
	AttemptResult res = ATTEMPT_REFUSED;

	nall = collect_entries(idx, false);
	n = collect_entries(idx, true);
	if (n > 0 && n < nall)
	{
		int64		r = 0;

		budget--;
		include_set(idx, n);
		res = attempt_flush(&r, true);
		*rows += r;
		if (res == ATTEMPT_REFUSED)
			res = bisect_flush(idx, n, &budget, rows);
	}
	if (res != ATTEMPT_FAILED)
	{
		n = collect_entries(idx, false);
		if (n > 0)
			res = bisect_flush(idx, n, &budget, rows);
	}
	pfree(idx);
	return res;
}

/* Isolated entries due for a retry (all of them when flush() waits), alone. */
static void
retry_isolated(TimestampTz now, bool urgent, int64 *rows)
{
	int			tries = 0;

	for (int i = 0; i < nbatch && tries < FLUSH_ISOLATED_RETRIES; i++)
	{
		BatchEntry *b = &batch[i];
		AttemptResult res;
		int64		r = 0;

		if (b->finished || !b->isolated)
			continue;
		/* flush() waits: sooner, but still not in a loop */
		if (now < b->retry_at &&
			!(urgent && TimestampDifferenceExceeds(b->last_try, now, FLUSH_BACKOFF_MIN_MS)))
			continue;
		tries++;
		b->last_try = now;
		include_none();
		b->include = true;
		res = attempt_flush(&r, true);
		*rows += r;
		if (res == ATTEMPT_COMMITTED)
			continue;
		b->failures++;
		b->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  backoff_ms(b->failures));
		if (res == ATTEMPT_FAILED)
			break;				/* the database: the others would fail too */
	}
}

/*
 * Telemetry that failed for longer than the retry window is given up:
 * isolated entries always, others only when only_isolated is false (they
 * start their window at their first failure).
 */
static void
drop_expired_telemetry(TimestampTz now, int window_ms, bool only_isolated)
{
	int64		dropped = 0;
	int			nentries = 0;
	char		why[64];

	for (int i = 0; i < nbatch; i++)
	{
		BatchEntry *b = &batch[i];

		if (b->finished || b->entry->nintents > 0 ||
			(only_isolated && !b->isolated))
			continue;
		if (b->first_failure == 0)
			b->first_failure = now;
		else if (TimestampDifferenceExceeds(b->first_failure, now, window_ms))
		{
			dropped += b->entry->nevents;
			nentries++;
			finish_entry(b, false, NULL);
		}
	}
	snprintf(why, sizeof(why), "that could not be written for %d s", window_ms / 1000);
	report_dropped(dropped, nentries, why);
}

/* Is a retry due: of the batch after a database failure, or of an isolated entry? */
static bool
retry_due(TimestampTz now, TimestampTz *next)
{
	TimestampTz due = 0;

	for (int i = 0; i < nbatch; i++)
	{
		BatchEntry *b = &batch[i];
		TimestampTz t;

		if (b->finished)
			continue;
		t = b->isolated ? b->retry_at : retry_at;
		if (due == 0 || t < due)
			due = t;
	}
	if (next)
		*next = due;
	return due != 0 && now >= due;
}

/*
 * One flush cycle: take what is ready, drop what may not be stored, retry
 * isolated entries that are due, write the rest.  After a database
 * failure, intents are still tried on their own (they cannot wait), at
 * most every FLUSH_BACKOFF_MIN_MS.  urgent: flush() waits.
 */
static AttemptResult
flush_cycle_runs(bool draining, bool urgent)
{
	AttemptResult res = ATTEMPT_NOTHING;
	int64		rows = 0;
	bool		full_attempt = true;
	int		   *idx;
	int			n;
	int			window_ms = draining ? FLUSH_SHUTDOWN_WINDOW_MS :
		machpay_flush_retry_window_s * 1000;
	TimestampTz now;

	commit_durably = urgent || draining;

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

	now = GetCurrentTimestamp();
	retry_isolated(now, urgent || draining, &rows);

	idx = MemoryContextAlloc(TopMemoryContext, sizeof(int) * nbatch);
	n = collect_entries(idx, false);
	if (n == 0)
		res = ATTEMPT_NOTHING;
	else if (consecutive_failures > 0 && now < retry_at)
	{
		/* Backing off: only intents, which cannot wait, and not in a loop. */
		int			nintents = collect_entries(idx, true);

		full_attempt = false;
		if (nintents > 0 &&
			TimestampDifferenceExceeds(last_attempt, now, FLUSH_BACKOFF_MIN_MS))
		{
			include_set(idx, nintents);
			res = attempt_flush(&rows, false);
			if (res == ATTEMPT_REFUSED)
				res = isolate_refused(&rows);
		}
	}
	else
	{
		include_set(idx, n);
		res = attempt_flush(&rows, false);
		if (res == ATTEMPT_REFUSED)
			res = isolate_refused(&rows);
	}
	pfree(idx);

	if (res == ATTEMPT_FAILED)
	{
		consecutive_failures++;
		retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											   backoff_ms(consecutive_failures));
		drop_expired_telemetry(GetCurrentTimestamp(), window_ms, false);
	}
	else if (res == ATTEMPT_REFUSED)
	{
		/* What the split could not settle within its budget: soon again. */
		n = 0;
		for (int i = 0; i < nbatch; i++)
			if (!batch[i].finished && !batch[i].isolated)
				n++;
		if (n > 0)
			retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   FLUSH_BACKOFF_MIN_MS);
		if (consecutive_failures == 0)
			consecutive_failures = n > 0 ? 1 : 0;
	}
	else if (res == ATTEMPT_COMMITTED && full_attempt && consecutive_failures > 0)
	{
		ereport(LOG, (errmsg("machpay flusher recovered after %d failed flushes",
							 consecutive_failures)));
		consecutive_failures = 0;
	}
	drop_expired_telemetry(GetCurrentTimestamp(), window_ms, true);
	compact_batch();
	publish_progress(rows);
	MemoryContextReset(flush_cxt);
	MemoryContextSwitchTo(TopMemoryContext);
	if (res == ATTEMPT_REFUSED)
		res = ATTEMPT_COMMITTED;	/* the others went in: look for more */
	return res;
}

/*
 * A cycle; once nothing of the batch is left but isolated entries, its run
 * is settled and later runs may commit.  A batch that failed keeps its run: later runs wait for
 * its retry (within BUFFER_ORDER_WAIT_MS), so a passing failure does not
 * reorder what readers see.
 */
static AttemptResult
flush_cycle(bool draining, bool urgent)
{
	AttemptResult res = flush_cycle_runs(draining, urgent);
	bool		unsettled = false;

	/* Isolated entries are retried alone, out of turn: nobody waits for them. */
	for (int i = 0; i < nbatch; i++)
		if (!batch[i].finished && !batch[i].isolated)
			unsettled = true;
	if (!unsettled)
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
	release_flushed_entries();
	consecutive_failures = 0;
	for (;;)
	{
		int64		ready;
		int			intents;
		bool		requested;
		bool		pending;
		AttemptResult res;

		res = flush_cycle(true, false);
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
	apply_writer_settings();
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
			apply_writer_settings();
		}

		buffer_flusher_status(&ready, &intents, &requested, &pending);
		now = GetCurrentTimestamp();
		flush_now = requested || intents > 0 || ready >= machpay_batch_size ||
			retry_due(now, NULL);
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
			AttemptResult res = flush_cycle(false, requested);

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
		{
			long		since = (long) ((now - last_flush) / 1000);
			TimestampTz next;

			timeout = Max(1, machpay_flush_interval_ms - since);
			if (nbatch > 0 && (retry_due(now, &next) || next != 0))
				timeout = Min(timeout, Max(1, (long) ((next - now) / 1000)));
		}
		/* Intents failing in backoff, tickets to reclaim: look again soon. */
		if (intents > 0 || pending)
			timeout = Min(timeout, 100);
		timeout = Min(timeout, machpay_flush_interval_ms);

		release_flushed_entries();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
