/*-------------------------------------------------------------------------
 * http.c
 *	  The ingest workers: machpay.http_workers background workers, each a
 *	  server of the HTTP engine (net.h) on machpay.listen_addresses:
 *	  machpay.port (SO_REUSEPORT, so the kernel spreads connections over
 *	  the workers).
 *
 * One worker serves HTTP/1.1 (keep-alive, pipelining), HTTP/2 with prior
 * knowledge on the plain port, or HTTPS with ALPN h2 when a certificate is
 * set.  The loop waits on its latch and sockets with a bounded timeout;
 * between network events it applies Postgres signals (SIGTERM drains,
 * SIGHUP reloads settings), answers requests whose intents were committed
 * (http_ingest.c) and refreshes the key cache (auth.c).  The engine hands
 * each request over twice at most (head, then body); each hand-over runs
 * in a memory context reset after it, and errors raised inside are caught
 * so a bad request never takes the worker down.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "storage/procsignal.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "buffer/series_registry.h"
#include "common/auth.h"
#include "common/machpay.h"
#include "common/stats.h"
#include "http/http.h"
#include "net/http_reply.h"

PGDLLEXPORT void machpay_http_main(Datum main_arg);

/* Workers other than the ingest ones that machpay registers. */
#define MACHPAY_OTHER_WORKERS	(2 + machpay_writers_registered)
#define HTTP_RESTART_SECS		5
/* Loop wait: short while intents wait for their commit, else still bounded. */
#define HTTP_WAIT_PENDING_MS	2
#define HTTP_WAIT_IDLE_MS		100
#define HTTP_STATE_CHECK_MS		1000
#define HTTP_OPTIONS_CHECK_MS	10000
#define HTTP_DRAIN_GRACE_MS		2000

static HttpWorkerStatus http_status;

static int	worker_id;
static MemoryContext request_cxt;
static bool extension_logged = false;

/* Set in the postmaster, inherited by the workers: /readyz waits for them all. */
int			http_workers_started = 0;

void
http_register_workers(void)
{
	int			n = machpay_http_workers;
	int			room = max_worker_processes - MACHPAY_OTHER_WORKERS;

	if (machpay_port == 0)
		return;
	if (n > room)
	{
		ereport(WARNING,
				(errmsg("machpay.http_workers = %d does not fit in max_worker_processes = %d, starting %d ingest workers",
						n, max_worker_processes, Max(room, 1)),
				 errhint("Raise max_worker_processes to at least %d.",
						 n + MACHPAY_OTHER_WORKERS)));
		n = Max(room, 1);
	}

	http_workers_started = n;
	for (int i = 0; i < n; i++)
	{
		char		name[BGW_MAXLEN];

		snprintf(name, sizeof(name), "machpay ingest worker %d", i);
		/* Consistent state: on a standby the worker runs and answers 503. */
		machpay_register_worker("machpay_http_main", name, "machpay ingest",
								BgWorkerStart_ConsistentState, HTTP_RESTART_SECS,
								Int32GetDatum(i));
	}
}

/* ---------------------------------------------------------------------
 * Requests
 * ---------------------------------------------------------------------
 */
static bool
path_is(NetRequest *req, const char *path)
{
	return strcmp(req->path, path) == 0;
}

static bool
method_is(NetRequest *req, const char *method)
{
	return strcmp(req->method, method) == 0;
}

static void
send_405(NetRequest *req, const char *allow)
{
	const char *extra[] = {"allow", allow, NULL};

	http_reply_error(req, 405, extra, "method_not_allowed",
					 "method not allowed on this path");
}

static void
dispatch(NetRequest *req)
{
	bool		get = method_is(req, "GET") || method_is(req, "HEAD");

	if (path_is(req, "/v1/ingest"))
	{
		if (method_is(req, "POST"))
			http_ingest_headers(req, &http_status);
		else
			send_405(req, "POST");
	}
	else if (path_is(req, "/healthz") || path_is(req, "/readyz") ||
			 path_is(req, "/metrics"))
	{
		if (!get)
			send_405(req, "GET, HEAD");
		else if (path_is(req, "/healthz"))
			http_ops_healthz(req);
		else if (path_is(req, "/readyz"))
			http_ops_readyz(req, &http_status);
		else
			http_ops_metrics(req);
	}
	else
		http_reply_error(req, 404, NULL, "not_found", "no such path");
}

/*
 * Runs one hand-over of a request.  What it allocates lives in request_cxt,
 * reset after it; a pending request copies what it keeps (http_ingest.c).
 */
static void
run_endpoint(NetRequest *req, void (*endpoint) (NetRequest *))
{
	MemoryContext oldcxt = MemoryContextSwitchTo(request_cxt);

	PG_TRY();
	{
		endpoint(req);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(request_cxt);
		EmitErrorReport();
		FlushErrorState();
		if (!net_request_answered(req))
			http_reply_error(req, 500, NULL, "internal_error",
							 "the request could not be processed");
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(request_cxt);
}

static void
on_headers(NetRequest *req)
{
	run_endpoint(req, dispatch);
}

static void
on_body(NetRequest *req)
{
	run_endpoint(req, http_ingest_body);
}

static const char *error_code;
static const char *error_message;
static int	error_status;

static void
reply_protocol_error(NetRequest *req)
{
	http_reply_error(req, error_status, NULL, error_code, error_message);
}

static void
on_error(NetRequest *req, int status, const char *code, const char *message)
{
	error_status = status;
	error_code = code;
	error_message = message;
	run_endpoint(req, reply_protocol_error);
}

static const NetHandler ingest_handler = {on_headers, on_body, on_error};

static void
apply_settings(void)
{
	NetLimits	limits;

	net_limits_from_settings(&limits);
	net_apply_limits(&limits);
}

static void
server_setup(void)
{
	http_reply_set_counting(true);
	net_count_closes(true);
	net_server_init(&ingest_handler, "machpay ingest worker",
					machpay_tls_cert_file, machpay_tls_key_file);
	if (net_open_listeners(machpay_listen_addresses, machpay_port, true) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("machpay ingest worker could not listen on any of machpay.listen_addresses = \"%s\" port %d",
						machpay_listen_addresses, machpay_port)));
}

/* ---------------------------------------------------------------------
 * The loop
 * ---------------------------------------------------------------------
 */
static bool
extension_exists(void)
{
	volatile bool exists = false;
	MemoryContext oldcxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		exists = OidIsValid(get_extension_oid(MACHPAY_EXTENSION_NAME, true));
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		exists = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	return exists;
}

static void
report_activity(void)
{
	char		activity[128];

	switch (http_status.state)
	{
		case HTTP_STATE_STARTING:
			snprintf(activity, sizeof(activity),
					 "listening on port %d, waiting for CREATE EXTENSION", machpay_port);
			break;
		case HTTP_STATE_SERVING:
			snprintf(activity, sizeof(activity), "serving on port %d%s%s",
					 machpay_port, net_tls_enabled() ? " (TLS)" : "",
					 http_status.in_recovery ? " (standby: ingest refused)" : "");
			break;
		case HTTP_STATE_DRAINING:
			snprintf(activity, sizeof(activity), "draining");
			break;
	}
	pgstat_report_activity(http_status.state == HTTP_STATE_DRAINING ?
						   STATE_RUNNING : STATE_IDLE, activity);
}

/*
 * Each worker counts itself in STAT_HTTP_WORKERS_READY while it serves, so
 * /readyz answers 200 only when every worker does: the kernel hands a new
 * connection to any of them.
 */
static bool counted_ready = false;

static void
count_ready(bool ready)
{
	if (ready != counted_ready)
		stats_add(STAT_HTTP_WORKERS_READY, ready ? 1 : -1);
	counted_ready = ready;
}

static void
uncount_ready(int code, Datum arg)
{
	count_ready(false);
}

/* Extension, recovery and key cache, at most once a second (keys: auth.c). */
static void
refresh_state(TimestampTz now, TimestampTz *last_check)
{
	static TimestampTz last_options = 0;
	HttpWorkerState before = http_status.state;
	bool		recovery_before = http_status.in_recovery;

	if (http_status.state == HTTP_STATE_DRAINING)
		return;

	if (TimestampDifferenceExceeds(*last_check, now, HTTP_STATE_CHECK_MS))
	{
		*last_check = now;
		http_status.in_recovery = RecoveryInProgress();
		if (!http_status.extension_ready)
		{
			http_status.extension_ready = extension_exists() &&
				machpay_worker_become_role("machpay ingest worker");
			if (http_status.extension_ready)
				http_status.extension_ready = auth_refresh(true);
			else if (!extension_logged)
			{
				ereport(LOG,
						(errmsg("machpay ingest worker %d waiting for extension \"%s\" in database \"%s\"",
								worker_id, MACHPAY_EXTENSION_NAME, machpay_database),
						 errhint("Run CREATE EXTENSION %s CASCADE in that database.",
								 MACHPAY_EXTENSION_NAME)));
				extension_logged = true;
			}
		}
	}
	if (http_status.extension_ready && !auth_refresh(false))
	{
		/* The keys cannot be read: the extension was dropped. */
		http_status.extension_ready = false;
	}
	if (http_status.extension_ready &&
		(http_status.state != HTTP_STATE_SERVING ||
		 TimestampDifferenceExceeds(last_options, now, HTTP_OPTIONS_CHECK_MS)))
	{
		last_options = now;
		http_ingest_refresh_options();
	}
	if (http_status.extension_ready)
		series_registry_refresh(SERIES_REGISTRY_GRACE_MS);
	count_ready(http_status.extension_ready);
	http_status.state = http_status.extension_ready ?
		HTTP_STATE_SERVING : HTTP_STATE_STARTING;
	if (http_status.state != before || http_status.in_recovery != recovery_before)
		report_activity();
}

static void
begin_drain(void)
{
	http_status.state = HTTP_STATE_DRAINING;
	net_begin_drain();
	report_activity();
}

void
machpay_http_main(Datum main_arg)
{
	TimestampTz last_check = 0;
	TimestampTz drain_started = 0;
	bool		woken = false;

	worker_id = DatumGetInt32(main_arg);
	memset(&http_status, 0, sizeof(http_status));
	http_status.state = HTTP_STATE_STARTING;

	machpay_worker_attach("machpay ingest");
	before_shmem_exit(uncount_ready, 0);
	request_cxt = AllocSetContextCreate(TopMemoryContext, "machpay request",
										ALLOCSET_DEFAULT_SIZES);
	server_setup();
	report_activity();
	ereport(LOG,
			(errmsg("machpay ingest worker %d listening on \"%s\" port %d%s",
					worker_id, machpay_listen_addresses, machpay_port,
					net_tls_enabled() ? " with TLS" : "")));

	for (;;)
	{
		TimestampTz now;
		int			npending;
		int			ndeferred;
		int			wake;
		NetRequest *req;

		/*
		 * DROP DATABASE and others wait until every process absorbed their
		 * barrier.  Only barriers: a query cancel must not end the worker.
		 */
		if (ProcSignalBarrierPending)
			ProcessProcSignalBarrier();
		if (ShutdownRequestPending && http_status.state != HTTP_STATE_DRAINING)
		{
			begin_drain();
			drain_started = GetCurrentTimestamp();
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			apply_settings();
		}

		now = GetCurrentTimestamp();
		refresh_state(now, &last_check);
		http_ingest_begin_turn();
		npending = http_ingest_poll_pending(woken);
		while ((req = http_ingest_next_deferred()) != NULL)
			run_endpoint(req, http_ingest_map_deferred);
		ndeferred = http_ingest_deferred();

		if (http_status.state == HTTP_STATE_DRAINING && npending == 0 && ndeferred == 0 &&
			(net_connection_count() == 0 ||
			 TimestampDifferenceExceeds(drain_started, now, HTTP_DRAIN_GRACE_MS)))
			break;

		/* The flusher sets the latch when it posted intents' outcomes. */
		wake = net_wait(http_ingest_deferred_wait_ms(npending > 0 ?
													 HTTP_WAIT_PENDING_MS :
													 HTTP_WAIT_IDLE_MS));
		woken = (wake & NET_WAKE_LATCH) != 0;
		net_run();
	}

	ereport(LOG, (errmsg("machpay ingest worker %d stopped", worker_id)));
	/* Exit code 1: restarted after bgw_restart_time unless the server stops. */
	proc_exit(1);
}
