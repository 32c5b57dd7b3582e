/*-------------------------------------------------------------------------
 * maintenance.c
 *	  The maintenance background worker: runs the rollup job every
 *	  machpay.rollup_interval and the partition job every
 *	  machpay.maintenance_interval (0 disables a job), with retries.
 *
 * A *job* is the schedule, a *run* one execution (jobs.h).  Each run has
 * three transactions: the first takes the job's advisory lock and commits a
 * 'running' row; the second does the work and records success; after an
 * error a third records the failure.  So a crash mid-run leaves a
 * 'running' row, which the next start-up marks failed.
 *
 * Schedule: runs fall on multiples of the interval (UTC) plus a small
 * offset (5 minutes for the hourly rollup: late reports of the hour that
 * just closed arrive first); maintenance also runs once at start-up, in
 * case the partitions ahead ran out while the server was down.  A failed run is retried after 1 s, 2 s, 4 s ... (capped at one
 * hour) with up to 25% jitter, instead of its next slot.  When a manual
 * run holds the job's lock the worker does not wait: it tries again a
 * little later (JOB_BUSY_RETRY_MS).
 *
 * The worker starts only once recovery has finished: on a standby it does
 * nothing.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "buffer/series_registry.h"
#include "jobs/jobs.h"
#include "common/machpay.h"

#define WORKER_ROLE				"machpay maintenance"
#define JOB_RETRY_BASE_MS		1000
#define JOB_RETRY_CAP_MS		(3600 * 1000)
#define JOB_BUSY_RETRY_MS		5000
#define JOB_OFFSET_MAX_S		300
#define IDLE_WAIT_MS			60000

PGDLLEXPORT void maintenance_main(Datum main_arg);

/* Outcome of one attempt to run a job. */
typedef enum JobOutcome
{
	JOB_OUTCOME_SUCCEEDED,
	JOB_OUTCOME_FAILED,
	JOB_OUTCOME_BUSY			/* a manual run held the lock */
} JobOutcome;

typedef struct JobSchedule
{
	int			interval_s;		/* as last applied; 0 = disabled */
	TimestampTz next_run;
	int			failures;		/* consecutive */
} JobSchedule;

static JobSchedule schedules[JOB_COUNT];
static MemoryContext run_cxt;

void
maintenance_register_worker(void)
{
	machpay_register_worker("maintenance_main", WORKER_ROLE, WORKER_ROLE,
							BgWorkerStart_RecoveryFinished, 10, (Datum) 0);
}

static int
job_interval_s(JobKind job)
{
	return job == JOB_ROLLUP ? machpay_rollup_interval_s : machpay_maintenance_interval_s;
}

/* The next slot after now: a multiple of the interval plus the offset. */
static TimestampTz
next_slot(int interval_s, TimestampTz now)
{
	int64		interval_us = (int64) interval_s * USECS_PER_SEC;
	int64		offset_us = (int64) Min(JOB_OFFSET_MAX_S, interval_s / 12) * USECS_PER_SEC;
	int64		unix_now = now - (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	int64		slot = (unix_now - offset_us) / interval_us * interval_us + interval_us + offset_us;

	return slot + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
}

/* (Re)apply the intervals: a changed interval takes effect immediately. */
static void
apply_intervals(bool first)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int j = 0; j < JOB_COUNT; j++)
	{
		int			interval_s = job_interval_s((JobKind) j);

		if (!first && interval_s == schedules[j].interval_s)
			continue;
		schedules[j].interval_s = interval_s;
		schedules[j].failures = 0;
		/*
		 * Maintenance runs at once at start-up: after a long stop the
		 * partitions ahead may have run out.  Otherwise the next slot.
		 */
		if (first && j == JOB_MAINTENANCE)
			schedules[j].next_run = now;
		else
			schedules[j].next_run = interval_s > 0 ? next_slot(interval_s, now) : 0;
		if (!first)
			ereport(LOG,
					(errmsg("%s: %s job %s", WORKER_ROLE, job_name((JobKind) j),
							interval_s > 0 ? psprintf("every %d s", interval_s) : "disabled")));
	}
}

static void
start_transaction(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
commit_transaction(void)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}

static void
mark_interrupted_runs(void)
{
	int			n;

	start_transaction();
	n = job_runs_fail_interrupted();
	commit_transaction();
	if (n > 0)
		ereport(LOG,
				(errmsg("%s: marked %d interrupted run(s) failed", WORKER_ROLE, n)));
}

static JobOutcome
run_job(JobKind job)
{
	volatile int64 run_id = 0;
	volatile bool locked = false;
	volatile int64 rows = 0;
	ErrorData  *edata;

	MemoryContextSwitchTo(run_cxt);
	pgstat_report_activity(STATE_RUNNING, psprintf("%s run", job_name(job)));
	PG_TRY();
	{
		start_transaction();
		locked = job_lock_try_session(job);
		if (locked)
			run_id = job_run_insert(job, false);
		commit_transaction();

		if (locked)
		{
			start_transaction();
			rows = job_run_body(job);
			job_run_finish(run_id, job, false, JOB_RUN_SUCCEEDED, rows, NULL, NULL);
			job_unlock_session(job);
			locked = false;
			commit_transaction();
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(run_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();

		schedules[job].failures++;
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("%s: %s run " INT64_FORMAT " failed (failure %d in a row): %s",
						WORKER_ROLE, job_name(job), run_id, schedules[job].failures,
						edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 edata->hint ? errhint("%s", edata->hint) : 0));
		start_transaction();
		if (run_id > 0)
			job_run_finish(run_id, job, false, JOB_RUN_FAILED, 0, edata->message,
						   unpack_sql_state(edata->sqlerrcode));
		if (locked)
			job_unlock_session(job);
		commit_transaction();
		pgstat_report_activity(STATE_IDLE, NULL);
		MemoryContextReset(run_cxt);
		return JOB_OUTCOME_FAILED;
	}
	PG_END_TRY();

	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextReset(run_cxt);
	if (run_id == 0)
		return JOB_OUTCOME_BUSY;
	ereport(DEBUG1,
			(errmsg("%s: %s run " INT64_FORMAT " succeeded, " INT64_FORMAT " rows",
					WORKER_ROLE, job_name(job), run_id, rows)));
	schedules[job].failures = 0;
	return JOB_OUTCOME_SUCCEEDED;
}

/* Exponential backoff with jitter: base * 2^(failures-1), capped, +0..25%. */
static int64
retry_delay_ms(int failures)
{
	int64		delay = JOB_RETRY_BASE_MS;

	for (int i = 1; i < failures && delay < JOB_RETRY_CAP_MS; i++)
		delay *= 2;
	delay = Min(delay, JOB_RETRY_CAP_MS);
	return delay + (int64) (delay * 0.25 * pg_prng_double(&pg_global_prng_state));
}

static void
run_due_jobs(void)
{
	for (int j = 0; j < JOB_COUNT; j++)
	{
		JobSchedule *s = &schedules[j];
		TimestampTz now = GetCurrentTimestamp();

		if (s->interval_s <= 0 || now < s->next_run)
			continue;
		switch (run_job((JobKind) j))
		{
			case JOB_OUTCOME_SUCCEEDED:
				s->next_run = next_slot(s->interval_s, GetCurrentTimestamp());
				break;
			case JOB_OUTCOME_BUSY:
				s->next_run = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), JOB_BUSY_RETRY_MS);
				ereport(LOG,
						(errmsg("%s: %s run postponed by %d ms: a manual run holds the job's lock",
								WORKER_ROLE, job_name((JobKind) j), JOB_BUSY_RETRY_MS)));
				break;
			case JOB_OUTCOME_FAILED:
				{
					int64		delay = retry_delay_ms(s->failures);

					s->next_run = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);
					ereport(LOG,
							(errmsg("%s: retrying %s job in " INT64_FORMAT " ms (retry %d)",
									WORKER_ROLE, job_name((JobKind) j), delay, s->failures)));
					break;
				}
		}
		if (ConfigReloadPending || ShutdownRequestPending)
			break;
	}
}

static long
wait_ms(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		ms = IDLE_WAIT_MS;

	for (int j = 0; j < JOB_COUNT; j++)
	{
		if (schedules[j].interval_s > 0)
		{
			long		d = TimestampDifferenceMilliseconds(now, schedules[j].next_run);

			ms = Min(ms, d);
		}
	}
	return Max(ms, 0);
}

void
maintenance_main(Datum main_arg)
{
	machpay_worker_attach(WORKER_ROLE);
	/*
	 * Its statements run once a day or an hour: compiling them saves
	 * nothing, and loading LLVM once added some 20 MB to a process that
	 * lives for months.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	if (!machpay_worker_wait_for_extension(WORKER_ROLE))
		proc_exit(0);

	run_cxt = AllocSetContextCreate(TopMemoryContext, "machpay maintenance run",
									ALLOCSET_DEFAULT_SIZES);
	mark_interrupted_runs();
	apply_intervals(true);
	ereport(LOG,
			(errmsg("%s started: rollup every %d s, maintenance every %d s (0 = disabled)",
					WORKER_ROLE, machpay_rollup_interval_s, machpay_maintenance_interval_s)));

	while (!ShutdownRequestPending)
	{
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			apply_intervals(false);
		}
		run_due_jobs();
		if (ShutdownRequestPending)
			break;
		series_registry_refresh(0);
		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(wait_ms(), SERIES_REGISTRY_CHECK_MS), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	proc_exit(0);
}
