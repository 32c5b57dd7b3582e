/*-------------------------------------------------------------------------
 * workers_pending.c
 *	  Registration points of the workers not built yet; each moves to its
 *	  own file (flusher.c, http.c, maintenance.c, sse.c) as it lands.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "machpay.h"

void
flusher_register_worker(void)
{
}

void
http_register_workers(void)
{
}

void
maintenance_register_worker(void)
{
}

void
sse_register_worker(void)
{
}
