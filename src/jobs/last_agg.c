/*-------------------------------------------------------------------------
 * last_agg.c
 *	  The machpay.last(value, time) aggregate used by the hourly rollup.
 *
 * `last` of an hour is the value at its latest time.  In SQL that is an
 * ordered aggregate (array_agg ... ORDER BY time DESC), which sorts every
 * group; this keeps one (time, value) pair per group instead, as cheap as
 * max().  At equal times the larger value (float8 order: NaN largest)
 * wins, so the result does not depend on the order rows are read in.  The
 * rollup itself is SQL (machpay._rollup in schema/41_maintenance.sql).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/float.h"
#include "utils/timestamp.h"

typedef struct LastState
{
	TimestampTz time;
	float8		value;
} LastState;

PG_FUNCTION_INFO_V1(machpay_last_transfn);
Datum
machpay_last_transfn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext;
	LastState  *state = PG_ARGISNULL(0) ? NULL : (LastState *) PG_GETARG_POINTER(0);
	float8		value;
	TimestampTz time;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		elog(ERROR, "machpay_last_transfn called in non-aggregate context");
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
	{
		if (state == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(state);
	}
	value = PG_GETARG_FLOAT8(1);
	time = PG_GETARG_TIMESTAMPTZ(2);

	if (state == NULL)
	{
		state = (LastState *) MemoryContextAlloc(aggcontext, sizeof(LastState));
		state->time = time;
		state->value = value;
	}
	else if (time > state->time ||
			 (time == state->time && float8_gt(value, state->value)))
	{
		state->time = time;
		state->value = value;
	}
	PG_RETURN_POINTER(state);
}

PG_FUNCTION_INFO_V1(machpay_last_finalfn);
Datum
machpay_last_finalfn(PG_FUNCTION_ARGS)
{
	LastState  *state;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	state = (LastState *) PG_GETARG_POINTER(0);
	PG_RETURN_FLOAT8(state->value);
}
