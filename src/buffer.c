/*-------------------------------------------------------------------------
 * buffer.c
 *	  Shared-memory buffer of validated row batches (placeholder until the
 *	  ingest server lands).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "machpay.h"

Size
buffer_shmem_size(void)
{
	return 0;
}

void
buffer_shmem_init(void)
{
}
