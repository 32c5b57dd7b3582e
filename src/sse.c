/*-------------------------------------------------------------------------
 * sse.c
 *	  Placeholder: registration point of the sse worker, not built yet.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "machpay.h"

void
sse_register_worker(void)
{
}
