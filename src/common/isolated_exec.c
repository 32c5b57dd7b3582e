/*-------------------------------------------------------------------------
 * isolated_exec.c
 *	  machpay._isolated_execute(sql, args): run one statement and undo every
 *	  setting it changed.
 *
 * pg_partman sets search_path for the session and puts back the value it
 * found.  Called from a function with a pinned search_path (or from the
 * install script, whose path CREATE EXTENSION chose), that value would
 * outlive the call and become the caller's search_path.  A GUC nest level
 * rolled back like an aborted subtransaction keeps the caller's settings
 * as they were, while the statement's effects on tables stay.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"

PG_FUNCTION_INFO_V1(machpay_isolated_execute);

/* Arguments are text parameters $1..$n; the statement casts them. */
Datum
machpay_isolated_execute(PG_FUNCTION_ARGS)
{
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Datum	   *elems = NULL;
	bool	   *elemnulls = NULL;
	int			nargs = 0;
	Oid		   *argtypes;
	char	   *nulls;
	int			nest;
	int			rc;

	if (!PG_ARGISNULL(1))
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &elemnulls, &nargs);
	argtypes = palloc(sizeof(Oid) * Max(nargs, 1));
	nulls = palloc(Max(nargs, 1));
	for (int i = 0; i < nargs; i++)
	{
		argtypes[i] = TEXTOID;
		nulls[i] = elemnulls[i] ? 'n' : ' ';
	}

	nest = NewGUCNestLevel();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args(sql, nargs, argtypes, elems, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "statement failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	AtEOXact_GUC(false, nest);
	PG_RETURN_VOID();
}
