/*-------------------------------------------------------------------------
 * flusher.c
 *	  Placeholder: registration point of the flusher worker, not built yet.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "machpay.h"

void
flusher_register_worker(void)
{
}
