/*-------------------------------------------------------------------------
 * guc.c
 *	  The machpay.* settings of SPEC §2.
 *
 * PGC_POSTMASTER only where a change truly needs a restart (shared memory
 * size, the set of workers and their sockets, the workers' database);
 * everything else is PGC_SIGHUP and applied by the workers on reload.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <unistd.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include "common/machpay.h"

char	   *machpay_database = NULL;
char	   *machpay_worker_role = NULL;
char	   *machpay_listen_addresses = NULL;
int			machpay_port = 8080;
int			machpay_sse_port = 8081;
int			machpay_http_workers = 1;
int			machpay_flush_workers = 1;
int			machpay_buffer_size_kb = 64 * 1024;
int			machpay_batch_size = 1000;
int			machpay_flush_interval_ms = 1000;
int			machpay_max_body_size = 8 * 1024 * 1024;
bool		machpay_auth = true;
int			machpay_max_clock_skew_s = 300;
int			machpay_rollup_interval_s = 3600;
int			machpay_maintenance_interval_s = 86400;
char	   *machpay_archive_directory = NULL;
char	   *machpay_tls_cert_file = NULL;
char	   *machpay_tls_key_file = NULL;
int			machpay_sse_max_clients = 1000;
char	   *machpay_sse_allow_origin = NULL;
bool		machpay_notify_telemetry = false;
int			machpay_flush_retry_window_s = 60;
int			machpay_max_series_per_entity = 10000;
int			machpay_series_registry_size = 262144;
int			machpay_sse_heartbeat_interval_ms = 15000;
int			machpay_http_max_connections = 10000;
int			machpay_http_header_timeout_ms = 10000;
int			machpay_http_idle_timeout_ms = 10000;
int			machpay_http_max_header_size = 16384;
int			machpay_http2_max_streams = 100;
int			machpay_http2_max_resets = 200;
int			machpay_http2_max_control_frames = 1000;
int			machpay_http2_body_preread = 0;
int			machpay_http_overload_wait_ms = 100;
int			machpay_http_overload_queue = 32;
int			machpay_max_events_per_request = 10000;
int			machpay_max_rows_per_request = 100000;
int			machpay_max_rejects_per_request = 1000;
int			machpay_max_rows_per_body_byte = 32;
int			machpay_flush_lock_timeout_ms = 2000;
bool		machpay_telemetry_synchronous_commit = true;
int			machpay_telemetry_wal_step_kb = 1024;

/*
 * Telemetry writers that fit the machine: half its cores (the ingest
 * workers and the clients need the rest), at least one.
 */
static int
default_flush_workers(void)
{
	long		cores = sysconf(_SC_NPROCESSORS_ONLN);

	return (int) Max(1, Min(cores / 2, 16));
}

static void
define_postmaster_gucs(void)
{
	DefineCustomStringVariable("machpay.database",
							   gettext_noop("Database the machpay_receiver workers connect to."),
							   NULL, &machpay_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("machpay.worker_role",
							   gettext_noop("Role the workers act as once the extension exists; empty keeps the bootstrap superuser."),
							   NULL, &machpay_worker_role, "machpay_worker",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("machpay.listen_addresses",
							   gettext_noop("Addresses the ingest and SSE servers bind to (\"*\" for all)."),
							   NULL, &machpay_listen_addresses, "127.0.0.1",
							   PGC_POSTMASTER, GUC_LIST_INPUT, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.port",
							gettext_noop("TCP port of the ingest HTTP server; 0 disables it."),
							NULL, &machpay_port, 8080, 0, 65535,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.sse_port",
							gettext_noop("TCP port of the Server-Sent-Events relay; 0 disables it."),
							NULL, &machpay_sse_port, 8081, 0, 65535,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http_workers",
							gettext_noop("Number of ingest HTTP workers sharing the port (SO_REUSEPORT)."),
							NULL, &machpay_http_workers, 1, 1, 64,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.flush_workers",
							gettext_noop("Number of writer processes flushing telemetry in parallel (payment intents have a writer of their own)."),
							gettext_noop("The default is half the machine's cores, at least 1."),
							&machpay_flush_workers, default_flush_workers(), 1, 64,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.buffer_size",
							gettext_noop("Size of the shared-memory buffer of validated rows."),
							NULL, &machpay_buffer_size_kb, 64 * 1024, 1024, INT_MAX / 2,
							PGC_POSTMASTER, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.series_registry_size",
							gettext_noop("Metric series the shared series registry holds, for machpay.max_series_per_entity at admission; 0 = no registry."),
							NULL, &machpay_series_registry_size, 262144, 0, 64 * 1024 * 1024,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("machpay.tls_cert_file",
							   gettext_noop("PEM certificate; with tls_key_file, the ingest server speaks HTTPS (h2 by ALPN)."),
							   NULL, &machpay_tls_cert_file, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("machpay.tls_key_file",
							   gettext_noop("PEM private key of tls_cert_file."),
							   NULL, &machpay_tls_key_file, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.sse_max_clients",
							gettext_noop("Most SSE clients connected at once."),
							NULL, &machpay_sse_max_clients, 1000, 1, 100000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

static void
define_reloadable_gucs(void)
{
	DefineCustomIntVariable("machpay.batch_size",
							gettext_noop("Number of buffered events that triggers a flush."),
							NULL, &machpay_batch_size, 1000, 1, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.flush_interval",
							gettext_noop("Longest time buffered events wait before a flush."),
							NULL, &machpay_flush_interval_ms, 1000, 1, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.max_body_size",
							gettext_noop("Largest request body accepted, after decompression too."),
							NULL, &machpay_max_body_size, 8 * 1024 * 1024, 1024, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.max_events_per_request",
							gettext_noop("Most events one request may hold; more is answered 413 before the rest is read (0 = no limit)."),
							NULL, &machpay_max_events_per_request, 10000, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.max_rows_per_request",
							gettext_noop("Most rows the accepted events of one request may yield; more is answered 413 (0 = no limit)."),
							NULL, &machpay_max_rows_per_request, 100000, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.max_rejects_per_request",
							gettext_noop("Most rejected events in one request; more is answered 422 before the rest is read and nothing is stored (0 = no limit)."),
							NULL, &machpay_max_rejects_per_request, 1000, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.max_rows_per_body_byte",
							gettext_noop("Most rows (dead letters included) per byte of a request body as sent, before decompression; more is answered 413 (0 = no limit)."),
							NULL, &machpay_max_rows_per_body_byte, 32, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.flush_lock_timeout",
							gettext_noop("How long a flush waits for a table lock before it fails and is retried (0 = no limit)."),
							gettext_noop("A table locked by another session then delays only the rows bound for it: intents are committed on their own meanwhile."),
							&machpay_flush_lock_timeout_ms, 2000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("machpay.telemetry_synchronous_commit",
							 gettext_noop("Telemetry batches wait for their WAL flush at commit, as the server's synchronous_commit says (off: they do not)."),
							 gettext_noop("Off writes more telemetry per second, but a crash may then lose the last batches committed as well as the unflushed buffer. Payment intents always commit durably."),
							 &machpay_telemetry_synchronous_commit, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.telemetry_wal_step",
							gettext_noop("A telemetry writer flushes its WAL every this much while it writes a batch (0 = only at commit)."),
							gettext_noop("Bounds the telemetry WAL a payment intent's commit finds to flush before its own."),
							&machpay_telemetry_wal_step_kb, 1024, 0, INT_MAX / 1024,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomBoolVariable("machpay.auth",
							 gettext_noop("Require ingest keys on ingest and console keys on the SSE stream."),
							 NULL, &machpay_auth, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.max_clock_skew",
							gettext_noop("How far in the future an event time may be."),
							NULL, &machpay_max_clock_skew_s, 300, 0, 86400 * 7,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.rollup_interval",
							gettext_noop("Schedule of the hourly rollup job; 0 disables the scheduled runs."),
							NULL, &machpay_rollup_interval_s, 3600, 0, 86400 * 7,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.maintenance_interval",
							gettext_noop("Schedule of the partition maintenance job; 0 disables the scheduled runs."),
							NULL, &machpay_maintenance_interval_s, 86400, 0, 86400 * 31,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("machpay.archive_directory",
							   gettext_noop("Directory where expired payment-intent partitions are exported; empty moves them to schema machpay_archive."),
							   NULL, &machpay_archive_directory, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("machpay.sse_allow_origin",
							   gettext_noop("Access-Control-Allow-Origin sent on the SSE stream; empty sends none."),
							   NULL, &machpay_sse_allow_origin, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("machpay.notify_telemetry",
							 gettext_noop("Also emit one gateway/sdk event per telemetry report."),
							 NULL, &machpay_notify_telemetry, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.flush_retry_window",
							gettext_noop("How long the flusher retries buffered telemetry that cannot be written before dropping it."),
							NULL, &machpay_flush_retry_window_s, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.max_series_per_entity",
							gettext_noop("Most metric series one entity may have; an event bringing new series past it is rejected. 0 = no limit."),
							NULL, &machpay_max_series_per_entity, 10000, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.sse_heartbeat_interval",
							gettext_noop("Interval of the comment heartbeat on SSE streams; 0 disables it."),
							NULL, &machpay_sse_heartbeat_interval_ms, 15000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http_max_connections",
							gettext_noop("Open client connections per ingest worker, and of the SSE relay; more are closed at once."),
							NULL, &machpay_http_max_connections, 10000, 1, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http_header_timeout",
							gettext_noop("Time a client has to send a whole request head (TLS handshake included)."),
							NULL, &machpay_http_header_timeout_ms, 10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http_idle_timeout",
							gettext_noop("Time a connection may stay idle, or stall while reading a body or writing an answer."),
							NULL, &machpay_http_idle_timeout_ms, 10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http_max_header_size",
							gettext_noop("Largest request head (HTTP/1.1) or header block (HTTP/2)."),
							NULL, &machpay_http_max_header_size, 16384, 1024, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http2_max_streams",
							gettext_noop("Concurrent streams per HTTP/2 connection."),
							NULL, &machpay_http2_max_streams, 100, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http2_max_resets",
							gettext_noop("Streams an HTTP/2 client may reset in 10 s before its connection is closed (Rapid Reset)."),
							NULL, &machpay_http2_max_resets, 200, 1, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http2_max_control_frames",
							gettext_noop("SETTINGS, PING, WINDOW_UPDATE, PRIORITY and empty DATA frames an HTTP/2 client may send in 10 s."),
							NULL, &machpay_http2_max_control_frames, 1000, 10, 10000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http_overload_wait",
							gettext_noop("How long a telemetry request that finds the buffer full waits for room before it is answered 429 (0 = at once)."),
							gettext_noop("Clients that post again as soon as they are refused then wait instead of spinning, which leaves the CPU to the writers."),
							&machpay_http_overload_wait_ms, 100, 0, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http_overload_queue",
							gettext_noop("Telemetry requests of one ingest worker that may wait for room at once (http_overload_wait); more are answered 429 at once."),
							gettext_noop("Each waiting request holds its connection or stream, so the queue is short."),
							&machpay_http_overload_queue, 32, 0, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("machpay.http2_body_preread",
							gettext_noop("Body bytes an HTTP/2 client may send before its request is decided (SETTINGS_INITIAL_WINDOW_SIZE)."),
							gettext_noop("A refused body costs at most this much reading; a larger accepted one waits one round trip for its window."),
							&machpay_http2_body_preread, 0, 0, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
}

void
machpay_define_gucs(void)
{
	/* Defining PGC_POSTMASTER settings after start-up is FATAL. */
	if (process_shared_preload_libraries_in_progress)
		define_postmaster_gucs();
	define_reloadable_gucs();
	MarkGUCPrefixReserved("machpay");
}
