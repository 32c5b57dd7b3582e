/*-------------------------------------------------------------------------
 * jobs.h
 *	  Jobs of the maintenance worker and their bookkeeping in job_runs.
 *
 * A *job* is a scheduled task (rollup, maintenance); a *run* is one
 * execution of it, one row of machpay.job_runs.  A run is *manual* when it
 * comes from run_rollup()/run_maintenance() in SQL.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_JOBS_H
#define MACHPAY_JOBS_H

typedef enum JobKind
{
	JOB_ROLLUP,
	JOB_MAINTENANCE,
	JOB_COUNT
} JobKind;

/* The states of a run, as stored in job_runs.status. */
typedef enum JobRunStatus
{
	JOB_RUN_RUNNING,
	JOB_RUN_SUCCEEDED,
	JOB_RUN_FAILED
} JobRunStatus;

/* job_runs keeps this many runs per job. */
#define JOB_RUNS_KEEP	1000

extern const char *job_name(JobKind job);

/*
 * The advisory lock that keeps a manual run and the worker apart.  Manual
 * runs wait for it (transaction lock); the worker only tries (session
 * lock, held across the transactions of one run) and postpones its run.
 */
extern void job_lock_wait_xact(JobKind job);
extern bool job_lock_try_session(JobKind job);
extern void job_unlock_session(JobKind job);

/* These run SPI statements: call them connected to SPI, in a transaction. */
extern int64 job_run_insert(JobKind job, bool manual);
extern void job_run_finish(int64 run_id, JobKind job, bool manual, JobRunStatus status,
						   int64 rows, const char *error, const char *sqlstate);
extern int	job_runs_fail_interrupted(void);
extern int64 job_run_body(JobKind job);

#endif							/* MACHPAY_JOBS_H */
