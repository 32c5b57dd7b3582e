/*-------------------------------------------------------------------------
 * http.c
 *	  The ingest workers: machpay.http_workers background workers, each an
 *	  h2o event loop on machpay.listen_addresses:machpay.port (SO_REUSEPORT,
 *	  so the kernel spreads connections over the workers).
 *
 * One worker serves HTTP/1.1 (keep-alive, pipelining), HTTP/2 with prior
 * knowledge on the plain port, or HTTPS with ALPN h2 when a certificate is
 * set.  The loop runs with a bounded wait so that, between network events,
 * it applies Postgres signals (SIGTERM drains, SIGHUP reloads settings),
 * notices postmaster death, answers requests whose intents were committed
 * (http_ingest.c) and refreshes the key cache (auth.c).  A *request* is
 * handled to its answer inside one callback, in a memory context reset
 * after it; errors raised inside are caught so a bad request never takes
 * the worker down.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

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

#include "common/auth.h"
#include "http/http.h"
#include "common/machpay.h"
#include "common/stats.h"

PGDLLEXPORT void machpay_http_main(Datum main_arg);

/* Workers other than the ingest ones that machpay registers. */
#define MACHPAY_OTHER_WORKERS	(2 + machpay_writers_registered)
#define HTTP_RESTART_SECS		5
#define HTTP_LISTEN_BACKLOG		4096
#define HTTP_MAX_LISTENERS		16
#define HTTP_CONNECTION_CAP		10000
/* Loop wait: short while intents wait for their commit, else still bounded. */
#define HTTP_WAIT_PENDING_MS	2
#define HTTP_WAIT_IDLE_MS		100
#define HTTP_STATE_CHECK_MS		1000
#define HTTP_OPTIONS_CHECK_MS	10000
#define HTTP_DRAIN_GRACE_MS		2000
#define HTTP_TIMEOUT_MS			10000

HttpWorkerStatus http_status;

static int	worker_id;
static h2o_globalconf_t globalconf;
static h2o_context_t h2o_ctx;
static h2o_accept_ctx_t accept_ctx;
static h2o_socket_t *listeners[HTTP_MAX_LISTENERS];
static int	nlisteners = 0;
static MemoryContext request_cxt;
static bool response_sent;
static bool extension_logged = false;

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
 * Answers
 * ---------------------------------------------------------------------
 */
void
http_count_status(int status)
{
	StatCounter c;

	switch (status)
	{
		case 200: c = STAT_HTTP_REQUESTS_200; break;
		case 202: c = STAT_HTTP_REQUESTS_202; break;
		case 400: c = STAT_HTTP_REQUESTS_400; break;
		case 401: c = STAT_HTTP_REQUESTS_401; break;
		case 403: c = STAT_HTTP_REQUESTS_403; break;
		case 404: c = STAT_HTTP_REQUESTS_404; break;
		case 405: c = STAT_HTTP_REQUESTS_405; break;
		case 411: c = STAT_HTTP_REQUESTS_411; break;
		case 413: c = STAT_HTTP_REQUESTS_413; break;
		case 415: c = STAT_HTTP_REQUESTS_415; break;
		case 422: c = STAT_HTTP_REQUESTS_422; break;
		case 429: c = STAT_HTTP_REQUESTS_429; break;
		case 500: c = STAT_HTTP_REQUESTS_500; break;
		case 503: c = STAT_HTTP_REQUESTS_503; break;
		default: c = STAT_HTTP_REQUESTS_OTHER; break;
	}
	stats_add(c, 1);
}

void
http_send_json(h2o_req_t *req, int status, const char *reason,
			   const char *body, size_t len)
{
	req->res.status = status;
	req->res.reason = reason;
	req->res.content_length = len;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
				   H2O_STRLIT("application/json"));
	http_count_status(status);
	response_sent = true;
	h2o_send_inline(req, body, len);
}

void
http_send_error(h2o_req_t *req, int status, const char *reason,
				const char *code, const char *message)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"error\":");
	escape_json(&buf, code);
	appendStringInfoString(&buf, ",\"message\":");
	escape_json(&buf, message);
	appendStringInfoChar(&buf, '}');
	http_send_json(req, status, reason, buf.data, buf.len);
	pfree(buf.data);
}

static bool
path_is(h2o_req_t *req, const char *path)
{
	return h2o_memis(req->path_normalized.base, req->path_normalized.len,
					 path, strlen(path));
}

static bool
method_is(h2o_req_t *req, const char *method)
{
	return h2o_memis(req->method.base, req->method.len, method, strlen(method));
}

static void
send_405(h2o_req_t *req, const char *allow)
{
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
				   allow, strlen(allow));
	http_send_error(req, 405, "Method Not Allowed", "method_not_allowed",
					"method not allowed on this path");
}

static void
dispatch(h2o_req_t *req)
{
	bool		get = method_is(req, "GET") || method_is(req, "HEAD");

	if (path_is(req, "/v1/ingest"))
	{
		if (method_is(req, "POST"))
			http_ingest_request(req);
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
			http_ops_readyz(req);
		else
			http_ops_metrics(req);
	}
	else
		http_send_error(req, 404, "Not Found", "not_found", "no such path");
}

/*
 * The one h2o handler.  Everything a request allocates lives in
 * request_cxt, reset when the answer is on its way; a pending request
 * copies what it keeps (http_ingest.c).
 */
static int
on_req(h2o_handler_t *self, h2o_req_t *req)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(request_cxt);

	response_sent = false;
	PG_TRY();
	{
		dispatch(req);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(request_cxt);
		EmitErrorReport();
		FlushErrorState();
		if (!response_sent)
			http_send_error(req, 500, "Internal Server Error", "internal_error",
							"the request could not be processed");
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(request_cxt);
	return 0;
}

/* ---------------------------------------------------------------------
 * Connections
 * ---------------------------------------------------------------------
 */
static void
on_connection_close(void *data)
{
	http_status.connections--;
}

static void
on_accept(h2o_socket_t *listener, const char *err)
{
	if (err != NULL)
		return;

	/* A bounded batch per wake-up so one busy listener cannot starve others. */
	for (int i = 0; i < 32; i++)
	{
		h2o_socket_t *sock = h2o_evloop_socket_accept(listener);

		if (sock == NULL)
			return;
		if (http_status.state == HTTP_STATE_DRAINING ||
			http_status.connections >= http_status.max_connections)
		{
			h2o_socket_close(sock);
			continue;
		}
		http_status.connections++;
		sock->on_close.cb = on_connection_close;
		sock->on_close.data = NULL;
		h2o_accept(&accept_ctx, sock);
	}
}

static int
open_listener(struct addrinfo *ai)
{
	int			fd;
	int			on = 1;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
		(ai->ai_family == AF_INET6 &&
		 setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) != 0) ||
		bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
		listen(fd, HTTP_LISTEN_BACKLOG) != 0)
	{
		int			save = errno;

		close(fd);
		errno = save;
		return -1;
	}
	return fd;
}

static void
open_listeners(void)
{
	char	   *raw = pstrdup(machpay_listen_addresses);
	List	   *hosts;
	ListCell   *lc;
	char		port[16];

	snprintf(port, sizeof(port), "%d", machpay_port);
	if (!SplitGUCList(raw, ',', &hosts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in machpay.listen_addresses")));

	foreach(lc, hosts)
	{
		const char *host = lfirst(lc);
		struct addrinfo hints;
		struct addrinfo *res;
		int			rc;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		if (strcmp(host, "*") == 0)
			host = NULL;
		rc = getaddrinfo(host, port, &hints, &res);
		if (rc != 0)
		{
			ereport(WARNING,
					(errmsg("could not resolve machpay.listen_addresses entry \"%s\": %s",
							host ? host : "*", gai_strerror(rc))));
			continue;
		}
		for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
		{
			int			fd;
			h2o_socket_t *sock;

			if (nlisteners >= HTTP_MAX_LISTENERS)
				break;
			fd = open_listener(ai);
			if (fd < 0)
			{
				ereport(WARNING,
						(errcode_for_socket_access(),
						 errmsg("could not listen on \"%s\" port %d: %m",
								host ? host : "*", machpay_port)));
				continue;
			}
			sock = h2o_evloop_socket_create(h2o_ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
			h2o_socket_read_start(sock, on_accept);
			listeners[nlisteners++] = sock;
		}
		freeaddrinfo(res);
	}
	if (nlisteners == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("machpay ingest worker could not listen on any of machpay.listen_addresses = \"%s\" port %d",
						machpay_listen_addresses, machpay_port)));
}

static void
close_listeners(void)
{
	for (int i = 0; i < nlisteners; i++)
	{
		h2o_socket_read_stop(listeners[i]);
		h2o_socket_close(listeners[i]);
	}
	nlisteners = 0;
}

static SSL_CTX *
make_ssl_ctx(void)
{
	SSL_CTX    *ssl;

	ssl = SSL_CTX_new(TLS_server_method());
	if (ssl == NULL)
		ereport(ERROR, (errmsg("could not create the TLS context")));
	SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ssl, machpay_tls_cert_file) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not load machpay.tls_cert_file \"%s\": %s",
						machpay_tls_cert_file,
						ERR_reason_error_string(ERR_get_error()))));
	if (SSL_CTX_use_PrivateKey_file(ssl, machpay_tls_key_file, SSL_FILETYPE_PEM) != 1 ||
		SSL_CTX_check_private_key(ssl) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not load machpay.tls_key_file \"%s\": %s",
						machpay_tls_key_file,
						ERR_reason_error_string(ERR_get_error()))));
	h2o_ssl_register_alpn_protocols(ssl, h2o_http2_alpn_protocols);
	return ssl;
}

/* Idle connections hold file descriptors: allow as many as the hard limit. */
static int
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
		(void) getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur > INT_MAX ? INT_MAX : (int) rl.rlim_cur;
}

static void
apply_settings(void)
{
	/*
	 * h2o refuses bodies over its limit on its own: a plain-text 413 on
	 * HTTP/1.1, a stream reset on HTTP/2.  Give it twice our limit so a
	 * body somewhat over max_body_size still gets the JSON 413 of
	 * http_ingest.c, while memory per connection stays bounded.
	 */
	globalconf.max_request_entity_size = (size_t) machpay_max_body_size * 2;
}

static void
server_setup(void)
{
	h2o_hostconf_t *hostconf;
	h2o_pathconf_t *pathconf;
	h2o_handler_t *handler;
	int			fdlimit = raise_fd_limit();

	h2o_config_init(&globalconf);
	globalconf.server_name = h2o_iovec_init(H2O_STRLIT("machpay"));
	globalconf.handshake_timeout = HTTP_TIMEOUT_MS;
	globalconf.http1.req_timeout = HTTP_TIMEOUT_MS;
	globalconf.http2.idle_timeout = HTTP_TIMEOUT_MS;
	globalconf.http2.graceful_shutdown_timeout = HTTP_DRAIN_GRACE_MS;
	apply_settings();

	hostconf = h2o_config_register_host(&globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	pathconf = h2o_config_register_path(hostconf, "/", 0);
	handler = h2o_create_handler(pathconf, sizeof(*handler));
	handler->on_req = on_req;

	h2o_context_init(&h2o_ctx, h2o_evloop_create(), &globalconf);
	memset(&accept_ctx, 0, sizeof(accept_ctx));
	accept_ctx.ctx = &h2o_ctx;
	accept_ctx.hosts = globalconf.hosts;
	if (machpay_tls_cert_file[0] != '\0' && machpay_tls_key_file[0] != '\0')
		accept_ctx.ssl_ctx = make_ssl_ctx();

	http_status.max_connections = Min(HTTP_CONNECTION_CAP, fdlimit - 64);
	open_listeners();
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
					 machpay_port, accept_ctx.ssl_ctx ? " (TLS)" : "",
					 http_status.in_recovery ? " (standby: ingest refused)" : "");
			break;
		case HTTP_STATE_DRAINING:
			snprintf(activity, sizeof(activity), "draining");
			break;
	}
	pgstat_report_activity(http_status.state == HTTP_STATE_DRAINING ?
						   STATE_RUNNING : STATE_IDLE, activity);
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
	http_status.state = http_status.extension_ready ?
		HTTP_STATE_SERVING : HTTP_STATE_STARTING;
	if (http_status.state != before || http_status.in_recovery != recovery_before)
		report_activity();
}

static void
begin_drain(void)
{
	http_status.state = HTTP_STATE_DRAINING;
	close_listeners();
	h2o_context_request_shutdown(&h2o_ctx);
	report_activity();
}

void
machpay_http_main(Datum main_arg)
{
	TimestampTz last_check = 0;
	TimestampTz drain_started = 0;

	worker_id = DatumGetInt32(main_arg);
	memset(&http_status, 0, sizeof(http_status));
	http_status.state = HTTP_STATE_STARTING;

	machpay_worker_attach("machpay ingest");
	request_cxt = AllocSetContextCreate(TopMemoryContext, "machpay request",
										ALLOCSET_DEFAULT_SIZES);
	server_setup();
	report_activity();
	ereport(LOG,
			(errmsg("machpay ingest worker %d listening on \"%s\" port %d%s",
					worker_id, machpay_listen_addresses, machpay_port,
					accept_ctx.ssl_ctx ? " with TLS" : "")));

	for (;;)
	{
		TimestampTz now;
		int			npending;
		bool		woken;

		if (!PostmasterIsAlive())
			proc_exit(1);
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
		/*
		 * The loop never sleeps in WaitLatch, so SetLatch only raises the
		 * flag (no signal): read it here, the bounded wait below bounds
		 * the delay.
		 */
		woken = MyLatch->is_set;
		ResetLatch(MyLatch);

		now = GetCurrentTimestamp();
		refresh_state(now, &last_check);
		npending = http_ingest_poll_pending(woken);

		if (http_status.state == HTTP_STATE_DRAINING && npending == 0 &&
			(http_status.connections == 0 ||
			 TimestampDifferenceExceeds(drain_started, now, HTTP_DRAIN_GRACE_MS)))
			break;

		/*
		 * An answer sent from here has its completion callback queued in
		 * h2o; an HTTP/1.1 connection reads its next request only after it
		 * ran, so do not sleep before it does.
		 */
		h2o_evloop_run(h2o_ctx.loop,
					   http_status.answered_from_loop ? 0 :
					   npending > 0 ? HTTP_WAIT_PENDING_MS : HTTP_WAIT_IDLE_MS);
		http_status.answered_from_loop = false;
	}

	ereport(LOG, (errmsg("machpay ingest worker %d stopped", worker_id)));
	/* Exit code 1: restarted after bgw_restart_time unless the server stops. */
	proc_exit(1);
}
