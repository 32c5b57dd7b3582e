/*-------------------------------------------------------------------------
 * maintenance.c
 *	  Placeholder: registration point of the maintenance worker, not built yet.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "machpay.h"

void
maintenance_register_worker(void)
{
}
