/*-------------------------------------------------------------------------
 * sse.c
 *	  The SSE relay worker: an h2o event loop serving the stream and the
 *	  console page, and a libpq connection that LISTENs on machpay_events.
 *
 * A background worker cannot receive notifications through its own backend
 * connection, so the relay holds a second, client connection to its own
 * server over the local Unix socket (first entry of unix_socket_directories,
 * port of the server), as the bootstrap superuser, to machpay.database.
 * pg_hba.conf must let it in, for example with
 *		local	<machpay.database>	<bootstrap superuser>	peer
 * (the default "local all all peer" or "trust" lines do).  If it is
 * refused, the relay logs one line with that hint and retries with backoff.
 *
 * That connection is non-blocking: its socket is watched by the h2o loop
 * (and polled once per loop turn), so neither a slow database nor a lost
 * connection ever blocks the clients.  The same connection reads the
 * console keys (sse_keys.c) every SSE_KEYS_RELOAD_MS.  When the connection
 * is lost (pg_terminate_backend, a restart of the server) the relay
 * reconnects by itself with exponential backoff; sequence numbers and the
 * replay window live in the worker and keep going.  Sequence numbers start
 * at the start time of the worker in milliseconds times 1000, so they keep
 * growing across restarts of the server too, and a Last-Event-ID from an
 * earlier run gets "event: reset".
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "common/machpay.h"
#include "sse/sse.h"

#define SSE_ROLE				"machpay sse relay"
#define SSE_LISTENER_APPNAME	"machpay_sse_listener"
#define SSE_KEYS_RELOAD_MS		500
#define SSE_BACKOFF_MIN_MS		100
#define SSE_BACKOFF_MAX_MS		5000
#define SSE_LOOP_WAIT_MS		100
#define SSE_BIND_RETRY_MS		5000
#define SSE_MAX_LISTENERS		16

PGDLLEXPORT void sse_worker_main(Datum main_arg);

typedef enum SseDbState
{
	SSE_DB_WAITING,				/* no connection; next attempt at db_next_attempt */
	SSE_DB_CONNECTING,			/* PQconnectPoll in progress */
	SSE_DB_LISTENING,			/* connected, LISTEN sent */
	SSE_DB_READY				/* LISTEN done: notifications flow */
} SseDbState;

typedef enum SseDbQuery
{
	SSE_QUERY_NONE,
	SSE_QUERY_LISTEN,
	SSE_QUERY_KEYS
} SseDbQuery;

static h2o_globalconf_t h2o_config;
static h2o_context_t h2o_ctx;
static h2o_accept_ctx_t accept_ctx;
static h2o_evloop_t *loop;
static int	nlisteners = 0;

static SseDbState db_state = SSE_DB_WAITING;
static SseDbQuery db_query = SSE_QUERY_NONE;
static PGconn *db_conn = NULL;
static h2o_socket_t *db_sock = NULL;
static uint64 db_next_attempt = 0;
static int	db_backoff_ms = SSE_BACKOFF_MIN_MS;
static bool db_lost_logged = false;	/* one line per outage ... */
static bool db_refused_logged = false;	/* ... and one per kind of failure */
static bool db_ever_ready = false;
static uint64 keys_next_load = 0;
static bool keys_error_logged = false;
static char *superuser_name = NULL;
static bool notifications_held = false;	/* parsed by libpq, not yet relayed */

static void db_poll(void);

static uint64
now_ms(void)
{
	return (uint64) (GetCurrentTimestamp() / 1000);
}

/* ---- listening sockets ---- */

static void
on_accept(h2o_socket_t *listener, const char *err)
{
	int			i;

	if (err != NULL)
		return;
	/* A few at a time, so a burst of connections cannot starve the stream. */
	for (i = 0; i < 32; i++)
	{
		h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
		int			one = 1;

		if (sock == NULL)
			break;
		(void) setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		h2o_accept(&accept_ctx, sock);
	}
}

static bool
bind_one(struct addrinfo *ai)
{
	int			fd;
	int			one = 1;
	h2o_socket_t *sock;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0)
		return false;
	(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		(void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0)
	{
		int			save = errno;

		close(fd);
		errno = save;
		return false;
	}
	sock = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);
	h2o_socket_read_start(sock, on_accept);
	nlisteners++;
	return true;
}

/* Binds every address of machpay.listen_addresses; "*" is every address. */
static void
open_listeners(bool log_failure)
{
	char	   *raw = pstrdup(machpay_listen_addresses);
	List	   *addrs = NIL;
	ListCell   *lc;
	char		port[16];

	snprintf(port, sizeof(port), "%d", machpay_sse_port);
	if (!SplitGUCList(raw, ',', &addrs))
	{
		ereport(LOG, (errmsg("sse relay: invalid machpay.listen_addresses \"%s\"",
							 machpay_listen_addresses)));
		return;
	}
	foreach(lc, addrs)
	{
		const char *host = lfirst(lc);
		struct addrinfo hints;
		struct addrinfo *res = NULL;
		struct addrinfo *ai;
		int			rc;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res);
		if (rc != 0)
		{
			if (log_failure)
				ereport(LOG, (errmsg("sse relay could not resolve \"%s\": %s", host, gai_strerror(rc))));
			continue;
		}
		for (ai = res; ai && nlisteners < SSE_MAX_LISTENERS; ai = ai->ai_next)
		{
			if (!bind_one(ai) && log_failure)
				ereport(LOG,
						(errcode_for_socket_access(),
						 errmsg("sse relay could not listen on \"%s\" port %d: %m", host, machpay_sse_port)));
		}
		freeaddrinfo(res);
	}
	if (nlisteners > 0)
		ereport(LOG, (errmsg("sse relay listening on port %d", machpay_sse_port)));
	else if (log_failure)
		ereport(LOG, (errmsg("sse relay has no listening socket; retrying every %d s",
							 SSE_BIND_RETRY_MS / 1000)));
}

/* ---- the LISTEN connection ---- */

static void
on_db_readable(h2o_socket_t *sock, const char *err)
{
	/* Held notifications are relayed once per loop turn (main loop). */
	if (!notifications_held)
		db_poll();
}

static void
db_disconnect(void)
{
	if (db_sock)
	{
		h2o_socket_read_stop(db_sock);
		h2o_socket_close(db_sock);	/* closes our dup of the libpq socket */
		db_sock = NULL;
	}
	if (db_conn)
		PQfinish(db_conn);
	db_conn = NULL;
	db_query = SSE_QUERY_NONE;
	notifications_held = false;
}

/*
 * Schedules the next attempt after a failure, with jittered backoff.  One
 * log line per outage; the pg_hba hint only when connecting failed.
 */
static void
db_fail(const char *what, const char *detail)
{
	char	   *msg = pstrdup(detail ? detail : "");
	char	   *p;
	int			len;

	for (p = msg; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	len = strlen(msg);
	while (len > 0 && msg[len - 1] == ' ')
		msg[--len] = '\0';
	if (db_state == SSE_DB_CONNECTING || db_state == SSE_DB_WAITING)
	{
		if (!db_refused_logged)
			ereport(LOG,
					(errmsg("sse relay %s: %s", what, msg),
					 errhint("The relay LISTENs through a libpq connection over the local socket in \"%s\" as user \"%s\" to database \"%s\"; pg_hba.conf needs a line such as \"local %s %s peer\" (or trust). It retries by itself.",
							 Unix_socket_directories ? Unix_socket_directories : "",
							 superuser_name, machpay_database, machpay_database, superuser_name)));
		db_refused_logged = true;
	}
	else
	{
		if (!db_lost_logged)
			ereport(LOG,
					(errmsg("sse relay %s: %s", what, msg),
					 errdetail("It reconnects by itself; clients stay connected.")));
		db_lost_logged = true;
	}
	db_disconnect();
	db_state = SSE_DB_WAITING;
	db_next_attempt = now_ms() + db_backoff_ms / 2 + random() % (db_backoff_ms / 2 + 1);
	db_backoff_ms = Min(db_backoff_ms * 2, SSE_BACKOFF_MAX_MS);
	pfree(msg);
}

static void
db_connect_start(void)
{
	const char *keys[7];
	const char *values[7];
	char		port[16];
	char	   *host;
	char	   *comma;

	host = pstrdup(Unix_socket_directories ? Unix_socket_directories : "");
	comma = strchr(host, ',');
	if (comma)
		*comma = '\0';
	while (*host == ' ')
		host++;
	if (*host == '\0')
		host = "localhost";
	snprintf(port, sizeof(port), "%d", PostPortNumber);
	keys[0] = "host";
	values[0] = host;
	keys[1] = "port";
	values[1] = port;
	keys[2] = "dbname";
	values[2] = machpay_database;
	keys[3] = "user";
	values[3] = superuser_name;
	keys[4] = "application_name";
	values[4] = SSE_LISTENER_APPNAME;
	keys[5] = "connect_timeout";
	values[5] = "10";
	keys[6] = NULL;
	values[6] = NULL;

	db_conn = PQconnectStartParams(keys, values, 0);
	if (db_conn == NULL || PQstatus(db_conn) == CONNECTION_BAD)
	{
		db_fail("could not connect to its database", db_conn ? PQerrorMessage(db_conn) : "out of memory");
		return;
	}
	db_state = SSE_DB_CONNECTING;
}

static bool
db_send(const char *sql, SseDbQuery what)
{
	if (!PQsendQuery(db_conn, sql))
	{
		db_fail("lost its database connection", PQerrorMessage(db_conn));
		return false;
	}
	db_query = what;
	return true;
}

static void
db_connected(void)
{
	int			fd;

	if (PQsetnonblocking(db_conn, 1) != 0)
	{
		db_fail("could not make its database connection non-blocking", PQerrorMessage(db_conn));
		return;
	}
	fd = dup(PQsocket(db_conn));
	if (fd < 0)
	{
		db_fail("could not watch its database connection", strerror(errno));
		return;
	}
	db_sock = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);
	h2o_socket_read_start(db_sock, on_db_readable);
	db_state = SSE_DB_LISTENING;
	(void) db_send("LISTEN " MACHPAY_NOTIFY_CHANNEL, SSE_QUERY_LISTEN);
}

static void
db_handle_result(PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	if (db_query == SSE_QUERY_LISTEN)
	{
		if (st != PGRES_COMMAND_OK)
		{
			db_fail("could not LISTEN " MACHPAY_NOTIFY_CHANNEL, PQresultErrorMessage(res));
			return;
		}
		db_state = SSE_DB_READY;
		db_backoff_ms = SSE_BACKOFF_MIN_MS;
		if (db_lost_logged || db_refused_logged || db_ever_ready)
			ereport(LOG, (errmsg("sse relay reconnected to database \"%s\" and listens on " MACHPAY_NOTIFY_CHANNEL " again; notifications sent while it was away are missed",
								 machpay_database)));
		else
			ereport(LOG, (errmsg("sse relay listens on " MACHPAY_NOTIFY_CHANNEL " in database \"%s\"",
								 machpay_database)));
		db_lost_logged = db_refused_logged = false;
		db_ever_ready = true;
		keys_next_load = 0;
	}
	else if (db_query == SSE_QUERY_KEYS)
	{
		if (st == PGRES_TUPLES_OK)
		{
			int			i;

			sse_keys_begin_load();
			for (i = 0; i < PQntuples(res); i++)
				sse_keys_add(PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
			sse_keys_end_load();
			keys_error_logged = false;
		}
		else if (!keys_error_logged)
		{
			ereport(LOG,
					(errmsg("sse relay could not read machpay.ingest_keys: %s", PQresultErrorMessage(res)),
					 errdetail("The last key list read stays in use.")));
			keys_error_logged = true;
		}
	}
}

/*
 * Advances the connection as far as it goes without blocking: called from
 * the loop when its socket is readable and once per loop turn.
 */
static void
db_poll(void)
{
	PGnotify   *n;
	uint64		now = now_ms();
	int64		budget = SSE_RELAY_TURN_BYTES;

	switch (db_state)
	{
		case SSE_DB_WAITING:
			if (now >= db_next_attempt)
				db_connect_start();
			return;
		case SSE_DB_CONNECTING:
			switch (PQconnectPoll(db_conn))
			{
				case PGRES_POLLING_OK:
					db_connected();
					break;
				case PGRES_POLLING_FAILED:
					db_fail("could not connect to its database", PQerrorMessage(db_conn));
					break;
				default:
					break;
			}
			return;
		case SSE_DB_LISTENING:
		case SSE_DB_READY:
			break;
	}

	/*
	 * Read more only once what libpq holds is relayed: while clients catch
	 * up, the backlog waits in the server's notification queue, not here.
	 */
	if (!notifications_held &&
		(!PQconsumeInput(db_conn) || PQstatus(db_conn) == CONNECTION_BAD))
	{
		db_fail("lost its database connection", PQerrorMessage(db_conn));
		return;
	}
	while (db_query != SSE_QUERY_NONE && !PQisBusy(db_conn))
	{
		PGresult   *res = PQgetResult(db_conn);

		if (res == NULL)
		{
			db_query = SSE_QUERY_NONE;
			break;
		}
		db_handle_result(res);
		PQclear(res);
		if (db_conn == NULL)
			return;				/* db_fail in the handler */
	}
	notifications_held = false;
	while ((n = PQnotifies(db_conn)) != NULL)
	{
		budget -= sse_relay_notification(n->extra);
		PQfreemem(n);
		if (budget <= 0)
		{
			notifications_held = true;
			break;
		}
	}
	if (db_state == SSE_DB_READY && db_query == SSE_QUERY_NONE && now >= keys_next_load)
	{
		keys_next_load = now + SSE_KEYS_RELOAD_MS;
		if (!db_send("SELECT encode(token_sha256, 'hex'), role, entity_id FROM machpay.ingest_keys"
					 " WHERE revoked_at IS NULL OR revoked_at > now()", SSE_QUERY_KEYS))
			return;
	}
	if (PQflush(db_conn) < 0)
		db_fail("lost its database connection", PQerrorMessage(db_conn));
}

/* ---- the worker ---- */

static void
load_superuser_name(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	superuser_name = MemoryContextStrdup(TopMemoryContext,
										 GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false));
	CommitTransactionCommand();
}

void
sse_worker_main(Datum main_arg)
{
	uint64		next_bind_attempt = 0;

	machpay_worker_attach(SSE_ROLE);
	pqsignal(SIGPIPE, SIG_IGN);
	if (!machpay_worker_wait_for_extension(SSE_ROLE))
		proc_exit(0);
	load_superuser_name();
	/* pg_cryptohash (key checks) registers with the current resource owner. */
	CurrentResourceOwner = ResourceOwnerCreate(NULL, SSE_ROLE);
	pgstat_report_activity(STATE_RUNNING, "relaying " MACHPAY_NOTIFY_CHANNEL);

	sse_window_init(now_ms() * 1000);
	h2o_config_init(&h2o_config);
	sse_clients_init(&h2o_config);
	loop = h2o_evloop_create();
	h2o_context_init(&h2o_ctx, loop, &h2o_config);
	memset(&accept_ctx, 0, sizeof(accept_ctx));
	accept_ctx.ctx = &h2o_ctx;
	accept_ctx.hosts = h2o_config.hosts;
	open_listeners(true);
	if (nlisteners == 0)
		next_bind_attempt = now_ms() + SSE_BIND_RETRY_MS;

	while (!ShutdownRequestPending)
	{
		uint64		now;

		(void) h2o_evloop_run(loop, notifications_held ? 0 :
							 db_state == SSE_DB_CONNECTING ? 10 : SSE_LOOP_WAIT_MS);
		if (!PostmasterIsAlive())
			proc_exit(1);
		/* Absorbs procsignal barriers (DROP DATABASE waits for them). */
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		db_poll();
		now = now_ms();
		sse_clients_tick(now);
		if (nlisteners == 0 && now >= next_bind_attempt)
		{
			open_listeners(false);
			next_bind_attempt = now + SSE_BIND_RETRY_MS;
		}
	}
	db_disconnect();
	/* exit code 1: restarted if terminated on its own, not at shutdown */
	proc_exit(1);
}

void
sse_register_worker(void)
{
	if (machpay_sse_port == 0)
		return;
	/* LISTEN is not allowed during recovery: a standby has no relay. */
	machpay_register_worker("sse_worker_main", SSE_ROLE, SSE_ROLE,
							BgWorkerStart_RecoveryFinished, 5, (Datum) 0);
}
