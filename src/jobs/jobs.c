/*-------------------------------------------------------------------------
 * jobs.c
 *	  Run bookkeeping shared by the maintenance worker and the SQL entry
 *	  points run_rollup() and run_maintenance(): the advisory lock, the
 *	  job_runs row, the `job` NOTIFY, and the bounded run history.
 *
 * The work itself is set-based SQL in schema/41_maintenance.sql
 * (machpay._rollup, machpay._maintenance); this file only frames it.
 *
 * A manual run lives in its caller's transaction: its job_runs row and its
 * NOTIFY commit with it, and a manual run that fails leaves no row (the
 * error goes to the caller).  The worker commits a 'running' row before
 * it starts, so a crash leaves a trace that start-up turns into 'failed'.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "jobs/jobs.h"
#include "common/machpay.h"
#include "notify/notify.h"

/* First key of the advisory locks: "mach"; the second is the JobKind. */
#define JOB_LOCK_KEY1	0x6d616368

static const char *const job_names[JOB_COUNT] = {
	[JOB_ROLLUP] = "rollup",
	[JOB_MAINTENANCE] = "maintenance",
};

static const char *const job_run_status_names[] = {
	[JOB_RUN_RUNNING] = "running",
	[JOB_RUN_SUCCEEDED] = "succeeded",
	[JOB_RUN_FAILED] = "failed",
};

const char *
job_name(JobKind job)
{
	return job_names[job];
}

/* The same tag as pg_advisory_lock(int4, int4), so a DBA can see and take it. */
static void
job_locktag(LOCKTAG *tag, JobKind job)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) JOB_LOCK_KEY1, (uint32) job, 2);
}

void
job_lock_wait_xact(JobKind job)
{
	LOCKTAG		tag;

	job_locktag(&tag, job);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

bool
job_lock_try_session(JobKind job)
{
	LOCKTAG		tag;

	job_locktag(&tag, job);
	return LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL;
}

void
job_unlock_session(JobKind job)
{
	LOCKTAG		tag;

	job_locktag(&tag, job);
	(void) LockRelease(&tag, ExclusiveLock, true);
}

int64
job_run_insert(JobKind job, bool manual)
{
	Oid			argtypes[2] = {TEXTOID, BOOLOID};
	Datum		values[2];
	bool		isnull;
	Datum		d;

	values[0] = CStringGetTextDatum(job_names[job]);
	values[1] = BoolGetDatum(manual);
	if (SPI_execute_with_args("INSERT INTO machpay.job_runs (job, status, manual) "
							  "VALUES ($1, 'running', $2) RETURNING run_id",
							  2, argtypes, values, NULL, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not record the start of a %s run", job_names[job]);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return DatumGetInt64(d);
}

/* A failed run says why: its error and SQLSTATE, as job_runs keeps them. */
static void
job_notify(int64 run_id, JobKind job, bool manual, JobRunStatus status, int64 rows,
		   const char *error, const char *sqlstate)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\":\"job\",\"job\":");
	escape_json(&buf, job_names[job]);
	appendStringInfo(&buf, ",\"run_id\":" INT64_FORMAT ",\"status\":\"%s\",\"rows\":" INT64_FORMAT
					 ",\"manual\":%s",
					 run_id, job_run_status_names[status], rows, manual ? "true" : "false");
	if (error)
	{
		appendStringInfoString(&buf, ",\"error\":");
		escape_json(&buf, error);
	}
	if (sqlstate)
	{
		appendStringInfoString(&buf, ",\"sqlstate\":");
		escape_json(&buf, sqlstate);
	}
	appendStringInfoChar(&buf, '}');
	(void) machpay_notify(buf.data, buf.len, "job");
	pfree(buf.data);
}

/*
 * Record the end of a run, announce it, and trim the job's history to the
 * newest JOB_RUNS_KEEP runs (by the primary key index: cheap every run).
 */
void
job_run_finish(int64 run_id, JobKind job, bool manual, JobRunStatus status,
			   int64 rows, const char *error, const char *sqlstate)
{
	Oid			argtypes[5] = {INT8OID, TEXTOID, INT8OID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Oid			trimtypes[2] = {TEXTOID, INT4OID};
	Datum		trimvalues[2];

	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(job_run_status_names[status]);
	values[2] = Int64GetDatum(rows);
	if (status != JOB_RUN_SUCCEEDED)
		nulls[2] = 'n';
	if (error)
		values[3] = CStringGetTextDatum(error);
	else
		nulls[3] = 'n';
	if (sqlstate)
		values[4] = CStringGetTextDatum(sqlstate);
	else
		nulls[4] = 'n';
	if (SPI_execute_with_args("UPDATE machpay.job_runs SET status = $2, rows = $3, error = $4, "
							  "sqlstate = $5, finished_at = clock_timestamp() WHERE run_id = $1",
							  5, argtypes, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the end of %s run " INT64_FORMAT, job_names[job], run_id);

	trimvalues[0] = CStringGetTextDatum(job_names[job]);
	trimvalues[1] = Int32GetDatum(JOB_RUNS_KEEP - 1);
	if (SPI_execute_with_args("DELETE FROM machpay.job_runs WHERE job = $1 AND run_id < "
							  "(SELECT run_id FROM machpay.job_runs WHERE job = $1 "
							  "ORDER BY run_id DESC OFFSET $2 LIMIT 1)",
							  2, trimtypes, trimvalues, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not trim the history of job %s", job_names[job]);

	job_notify(run_id, job, manual, status, status == JOB_RUN_SUCCEEDED ? rows : 0,
			   error, sqlstate);
}

/*
 * At worker start-up no run can be in progress: a committed 'running' row
 * is the trace of a crash (manual runs never commit that state).
 */
int
job_runs_fail_interrupted(void)
{
	if (SPI_execute("UPDATE machpay.job_runs SET status = 'failed', finished_at = clock_timestamp(), "
					"error = 'run interrupted: the server or the maintenance worker stopped during it' "
					"WHERE status = 'running'", false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not mark interrupted runs failed");
	return (int) SPI_processed;
}

/* The scheduled (argument-less) form of a job; returns its row count. */
int64
job_run_body(JobKind job)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;
	Datum		d;

	if (job == JOB_ROLLUP)
	{
		if (SPI_execute("SELECT machpay._rollup()", false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "rollup run returned no result");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		return isnull ? 0 : DatumGetInt64(d);
	}

	/* Partitions dropped or archived are worth a line each in the log. */
	values[0] = CStringGetTextDatum(machpay_archive_directory ? machpay_archive_directory : "");
	if (SPI_execute_with_args("SELECT action, parent_table, partition, detail "
							  "FROM machpay._maintenance(now(), false, $1)",
							  1, argtypes, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "maintenance run returned no result");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *action = SPI_getvalue(tup, desc, 1);

		ereport(strcmp(action, "create") == 0 ? DEBUG1 : LOG,
				(errmsg("machpay maintenance: %s %s: %s", action,
						SPI_getvalue(tup, desc, 3) ? SPI_getvalue(tup, desc, 3) : SPI_getvalue(tup, desc, 2),
						SPI_getvalue(tup, desc, 4) ? SPI_getvalue(tup, desc, 4) : "")));
	}
	return (int64) SPI_processed;
}

/* machpay.run_rollup(p_from, p_to): a manual rollup run. */
PG_FUNCTION_INFO_V1(machpay_run_rollup);
Datum
machpay_run_rollup(PG_FUNCTION_ARGS)
{
	Oid			argtypes[2] = {TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[2];
	char		nulls[2];
	int64		run_id;
	int64		rows;
	bool		isnull;

	for (int i = 0; i < 2; i++)
	{
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
	}

	job_lock_wait_xact(JOB_ROLLUP);
	SPI_connect();
	run_id = job_run_insert(JOB_ROLLUP, true);
	if (SPI_execute_with_args("SELECT machpay._rollup($1, $2)", 2, argtypes, values, nulls,
							  false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "rollup run returned no result");
	rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	job_run_finish(run_id, JOB_ROLLUP, true, JOB_RUN_SUCCEEDED, rows, NULL, NULL);
	SPI_finish();
	PG_RETURN_INT64(rows);
}

/*
 * machpay.run_maintenance(p_now, p_dry_run): a manual maintenance run.  A
 * dry run takes the lock (so it sees a stable state) but is not a run of
 * the job: no job_runs row, no NOTIFY.
 */
PG_FUNCTION_INFO_V1(machpay_run_maintenance);
Datum
machpay_run_maintenance(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			argtypes[3] = {TIMESTAMPTZOID, BOOLOID, TEXTOID};
	Datum		values[3];
	bool		dry_run = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	int64		run_id = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("p_now must not be null")));

	InitMaterializedSRF(fcinfo, 0);
	values[0] = PG_GETARG_DATUM(0);
	values[1] = BoolGetDatum(dry_run);
	values[2] = CStringGetTextDatum(machpay_archive_directory ? machpay_archive_directory : "");

	job_lock_wait_xact(JOB_MAINTENANCE);
	SPI_connect();
	if (!dry_run)
		run_id = job_run_insert(JOB_MAINTENANCE, true);
	if (SPI_execute_with_args("SELECT action, parent_table, partition, detail "
							  "FROM machpay._maintenance($1, $2, $3)",
							  3, argtypes, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "maintenance run failed");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		Datum		out[4];
		bool		outnull[4];

		for (int c = 0; c < 4; c++)
			out[c] = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c + 1, &outnull[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnull);
	}
	if (!dry_run)
		job_run_finish(run_id, JOB_MAINTENANCE, true, JOB_RUN_SUCCEEDED,
					   (int64) SPI_processed, NULL, NULL);
	SPI_finish();
	return (Datum) 0;
}
