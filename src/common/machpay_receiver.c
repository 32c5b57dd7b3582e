/*-------------------------------------------------------------------------
 * machpay_receiver.c
 *	  Module entry point: settings, shared memory and background workers.
 *
 * Without shared_preload_libraries the SQL API still works (machpay.ingest
 * writes in the caller's transaction); the buffer, the HTTP server and the
 * workers exist only when the library is preloaded.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "common/machpay.h"

PG_MODULE_MAGIC;

/* Workers besides the ingest and flush workers: maintenance, SSE relay. */
#define OTHER_WORKERS			2

int			machpay_writers_registered = 0;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
machpay_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(add_size(stats_shmem_size(), buffer_shmem_size()),
									notify_shmem_size()));
	series_registry_shmem_request();
}

static void
machpay_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats_shmem_init();
	buffer_shmem_init();
	notify_shmem_init();
	series_registry_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Telemetry writers that fit in max_worker_processes, leaving room for the
 * intents writer, the other workers and one ingest worker.
 */
static int
flush_workers_that_fit(void)
{
	int			n = machpay_flush_workers;
	int			room = max_worker_processes - OTHER_WORKERS - 1 - (machpay_port ? 1 : 0);

	if (n > room)
	{
		ereport(WARNING,
				(errmsg("machpay.flush_workers = %d does not fit in max_worker_processes = %d, starting %d telemetry writers",
						n, max_worker_processes, Max(room, 1)),
				 errhint("Raise max_worker_processes to at least %d.",
						 n + OTHER_WORKERS + 1 + (machpay_port ? machpay_http_workers : 0))));
		n = Max(room, 1);
	}
	return n;
}

void
_PG_init(void)
{
	machpay_define_gucs();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = machpay_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = machpay_shmem_startup;

	machpay_writers_registered = 1 + flush_workers_that_fit();
	flusher_register_workers(machpay_writers_registered - 1);
	http_register_workers();
	maintenance_register_worker();
	sse_register_worker();
}
