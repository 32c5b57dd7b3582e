/*-------------------------------------------------------------------------
 * worker_common.c
 *	  Start-up shared by every machpay background worker: signals, the
 *	  database connection, and waiting quietly for CREATE EXTENSION.
 *
 * A worker that starts before the extension exists logs one line and waits
 * on its latch; it neither exits (that would make the postmaster restart it
 * in a loop) nor repeats the message.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "common/machpay.h"

#define EXTENSION_POLL_MS 5000

/*
 * Register one static background worker of this library, connected to a
 * database, restarted restart_s seconds after it exits.
 */
void
machpay_register_worker(const char *function, const char *name, const char *type,
						BgWorkerStartTime start_time, int restart_s, Datum arg)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = start_time;
	worker.bgw_restart_time = restart_s;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "%s", MACHPAY_EXTENSION_NAME);
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", type);
	worker.bgw_main_arg = arg;
	RegisterBackgroundWorker(&worker);
}

/*
 * Install the standard signal handlers (SIGHUP sets ConfigReloadPending,
 * SIGTERM sets ShutdownRequestPending) and connect to machpay.database.
 *
 * The workers run SQL as the bootstrap superuser: with the database's
 * search_path, a function or operator that any role with CREATE on a
 * schema of that path defines with a closer argument match (a
 * public.unnest(timestamptz[]) beats pg_catalog.unnest(anyarray)) would run
 * with the worker's rights.  So the path is pinned to the system catalog
 * (and the worker's temporary schema, last) at the level of a session SET:
 * it outranks ALTER DATABASE / ALTER ROLE settings, and functions may still
 * set their own.
 */
void
machpay_worker_attach(const char *role)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(machpay_database, NULL, 0);
	SetConfigOption("search_path", MACHPAY_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_SESSION);
	pgstat_report_appname(role);
}

/*
 * In a PG_CATCH of a worker's own short transaction: log the error and
 * abort, so the worker goes on with its loop instead of exiting.
 */
void
machpay_worker_report_and_abort(MemoryContext cxt)
{
	MemoryContextSwitchTo(cxt);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
}

static bool
extension_exists(void)
{
	bool		exists;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	exists = OidIsValid(get_extension_oid(MACHPAY_EXTENSION_NAME, true));
	PopActiveSnapshot();
	CommitTransactionCommand();
	return exists;
}

/*
 * From now on act as machpay.worker_role (SET SESSION AUTHORIZATION), so
 * that what the worker runs is checked against that role's grants
 * (schema/90_privileges.sql) and a bug in a worker is not a superuser's.
 * The worker connects as the bootstrap superuser, since the role exists
 * only once CREATE EXTENSION made it; the switch follows the wait for the
 * extension.  False (logged once) while the role does not exist: the
 * worker waits rather than go on as a superuser.
 */
bool
machpay_worker_become_role(const char *role)
{
	static bool done = false;
	static bool logged = false;
	bool		exists;

	if (done || machpay_worker_role == NULL || machpay_worker_role[0] == '\0')
		return true;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	exists = OidIsValid(get_role_oid(machpay_worker_role, true));
	if (exists)
		SetConfigOption("session_authorization", machpay_worker_role, PGC_SUSET, PGC_S_SESSION);
	CommitTransactionCommand();
	if (exists)
	{
		done = true;
		return true;
	}
	if (!logged)
		ereport(LOG,
				(errmsg("%s waiting for role \"%s\" (machpay.worker_role)", role, machpay_worker_role),
				 errhint("CREATE EXTENSION %s creates \"machpay_worker\"; another role must exist and have its grants.",
						 MACHPAY_EXTENSION_NAME)));
	logged = true;
	return false;
}

/*
 * Returns true once the extension exists (and the worker acts as
 * machpay.worker_role), false if shutdown was requested while waiting.
 * Config reloads are processed while waiting.
 */
bool
machpay_worker_wait_for_extension(const char *role)
{
	bool		logged = false;

	for (;;)
	{
		if (ShutdownRequestPending)
			return false;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (extension_exists() && machpay_worker_become_role(role))
			return true;
		if (!logged)
		{
			ereport(LOG,
					(errmsg("%s waiting for extension \"%s\" in database \"%s\"",
							role, MACHPAY_EXTENSION_NAME, machpay_database),
					 errhint("Run CREATE EXTENSION %s CASCADE in that database.",
							 MACHPAY_EXTENSION_NAME)));
			logged = true;
		}
		pgstat_report_activity(STATE_IDLE, "waiting for CREATE EXTENSION");
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 EXTENSION_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}
