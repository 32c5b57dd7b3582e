/*-------------------------------------------------------------------------
 * commit_counter.c
 *	  Counters bumped when the transaction that changed a cached table
 *	  commits (commit_counter.h).
 *
 * XACT_EVENT_COMMIT callbacks run after the commit is recorded and the
 * transaction left the proc array (new snapshots see it), and before its
 * locks are released: a process waiting on one of them finds the counter
 * already moved when it gets the lock.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"

#include "common/commit_counter.h"

#define MAX_PENDING 4

static StatCounter pending[MAX_PENDING];
static const char *pending_table[MAX_PENDING];
static int	npending = 0;
static bool callback_registered = false;

static void
commit_counter_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (npending > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed %s", pending_table[0]),
						 errdetail("The workers learn of the change when the transaction that made it commits.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			for (int i = 0; i < npending; i++)
				stats_add(pending[i], 1);
			npending = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			npending = 0;
			break;
		default:
			break;
	}
}

/*
 * A subtransaction that rolls back keeps its bump: one reload too many is
 * harmless, one too few is not.
 */
void
commit_counter_bump_at_commit(StatCounter counter, const char *table)
{
	if (!callback_registered)
	{
		RegisterXactCallback(commit_counter_callback, NULL);
		callback_registered = true;
	}
	for (int i = 0; i < npending; i++)
		if (pending[i] == counter)
			return;
	if (npending >= MAX_PENDING)
		elog(ERROR, "too many cached tables changed in one transaction");
	pending[npending] = counter;
	pending_table[npending] = table;
	npending++;
}
