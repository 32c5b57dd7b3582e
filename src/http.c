/*-------------------------------------------------------------------------
 * http.c
 *	  Placeholder: registration point of the http worker, not built yet.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "machpay.h"

void
http_register_workers(void)
{
}
