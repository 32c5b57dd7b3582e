/*-------------------------------------------------------------------------
 * xact_stats.c
 *	  Counters applied at commit (see xact_stats.h).
 *
 * Pending counts are kept per subtransaction nesting level: a level that
 * commits hands its counts to its parent, one that aborts drops them, and
 * the top-level commit adds what is left to the shared counters.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"

#include "flusher/xact_stats.h"

typedef struct PendingCount
{
	int			level;			/* transaction nesting level that counted */
	StatCounter counter;
	int64		n;
} PendingCount;

static PendingCount *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;
static bool callbacks_registered = false;

static void
xact_stats_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			for (int i = 0; i < npending; i++)
				stats_add(pending[i].counter, pending[i].n);
			npending = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			npending = 0;
			break;
		default:
			break;
	}
}

static void
xact_stats_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			kept = 0;

	if (event != SUBXACT_EVENT_COMMIT_SUB && event != SUBXACT_EVENT_ABORT_SUB)
		return;
	for (int i = 0; i < npending; i++)
	{
		if (pending[i].level >= level)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
				continue;
			pending[i].level = level - 1;
		}
		pending[kept++] = pending[i];
	}
	npending = kept;
}

void
xact_stats_add(StatCounter counter, int64 n)
{
	int			level = GetCurrentTransactionNestLevel();

	if (n == 0)
		return;
	if (!callbacks_registered)
	{
		RegisterXactCallback(xact_stats_callback, NULL);
		RegisterSubXactCallback(xact_stats_subxact_callback, NULL);
		callbacks_registered = true;
	}
	/* Fold into the last entry when it is the same counter and level. */
	for (int i = npending - 1; i >= 0 && pending[i].level == level; i--)
	{
		if (pending[i].counter == counter)
		{
			pending[i].n += n;
			return;
		}
	}
	if (npending >= maxpending)
	{
		int			newmax = Max(16, maxpending * 2);

		pending = pending
			? repalloc(pending, sizeof(PendingCount) * newmax)
			: MemoryContextAlloc(TopMemoryContext, sizeof(PendingCount) * newmax);
		maxpending = newmax;
	}
	pending[npending].level = level;
	pending[npending].counter = counter;
	pending[npending].n = n;
	npending++;
}
