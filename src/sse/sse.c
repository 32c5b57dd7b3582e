/*-------------------------------------------------------------------------
 * sse.c
 *	  The SSE relay worker: a server of the HTTP engine (net/net.h) serving
 *	  the stream and the console page, and a libpq connection that LISTENs
 *	  on machpay_events.
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
 * That connection is non-blocking: its socket is in the engine's wait set
 * (and polled once per loop turn), so neither a slow database nor a lost
 * connection ever blocks the clients.  The console keys are the key cache
 * of common/auth.c, refreshed once per loop turn through the worker's own
 * backend; when they change, open streams are re-checked (sse_clients.c).
 * When the connection is lost (pg_terminate_backend, a restart of the
 * server) the relay reconnects by itself with exponential backoff;
 * sequence numbers and the replay window live in the worker and keep
 * going.  Notifications sent while it was away are lost with the
 * connection, so once it listens again it reads the payment intents
 * committed meanwhile back from the table (received up to
 * SSE_MISSED_MARGIN_S before the newest it relayed, or since it last
 * listened) and relays those it has not relayed yet: a console never
 * misses a settlement.  Sequence numbers start at the start time of the
 * worker in milliseconds times 1000, so they keep growing across restarts
 * of the server too, and a Last-Event-ID from an earlier run gets
 * "event: reset".
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

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

#include "common/auth.h"
#include "common/machpay.h"
#include "net/net.h"
#include "sse/sse.h"

#define SSE_ROLE				"machpay sse relay"
#define SSE_LISTENER_APPNAME	"machpay_sse_listener"
#define SSE_BACKOFF_MIN_MS		100
#define SSE_BACKOFF_MAX_MS		5000
#define SSE_LOOP_WAIT_MS		100
#define SSE_BIND_RETRY_MS		5000
#define SSE_STOP_GRACE_MS		1000	/* for the streams' ends to go out */
/*
 * An intent is received (created_at) before it commits: read back from
 * this long before the newest one relayed, so one that committed later
 * than a newer one is not missed (ids already relayed are skipped).
 */
#define SSE_MISSED_MARGIN_S		60
#define SSE_MISSED_MAX_ROWS		SSE_WINDOW_EVENTS

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
	SSE_QUERY_MISSED			/* payment intents committed while away */
} SseDbQuery;


static SseDbState db_state = SSE_DB_WAITING;
static SseDbQuery db_query = SSE_QUERY_NONE;
static PGconn *db_conn = NULL;
static int	db_watched_fd = -1;	/* libpq's socket, in the wait set */
static uint64 db_next_attempt = 0;
static int	db_backoff_ms = SSE_BACKOFF_MIN_MS;
static bool db_lost_logged = false;	/* one line per outage ... */
static bool db_refused_logged = false;	/* ... and one per kind of failure */
static bool db_ever_ready = false;
static bool missed_pending = false;	/* read back missed intents next */
static TimestampTz db_ready_at = 0; /* when LISTEN first succeeded */
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

/* Binds every address of machpay.listen_addresses; "*" is every address. */
static void
open_listeners(bool log_failure)
{
	if (net_open_listeners(machpay_listen_addresses, machpay_sse_port, log_failure) > 0)
		ereport(LOG, (errmsg("sse relay listening on port %d", machpay_sse_port)));
	else if (log_failure)
		ereport(LOG, (errmsg("sse relay has no listening socket; retrying every %d s",
							 SSE_BIND_RETRY_MS / 1000)));
}

/* ---- the LISTEN connection ---- */

static void
db_disconnect(void)
{
	if (db_watched_fd >= 0)
	{
		net_remove_fd(db_watched_fd);
		db_watched_fd = -1;
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
	const char *keys[8];
	const char *values[8];
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
	/*
	 * Times read back as JSON in the writer's format (UTC); search_path
	 * pinned like every worker's (worker_common.c).
	 */
	keys[6] = "options";
	values[6] = "-c TimeZone=UTC -c search_path=pg_catalog,pg_temp";
	keys[7] = NULL;
	values[7] = NULL;

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
	if (PQsetnonblocking(db_conn, 1) != 0)
	{
		db_fail("could not make its database connection non-blocking", PQerrorMessage(db_conn));
		return;
	}
	db_watched_fd = PQsocket(db_conn);
	net_add_fd(db_watched_fd);
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
		missed_pending = db_ever_ready;
		if (db_lost_logged || db_refused_logged || db_ever_ready)
			ereport(LOG, (errmsg("sse relay reconnected to database \"%s\" and listens on " MACHPAY_NOTIFY_CHANNEL " again; payment intents committed meanwhile are read back, other notifications sent while it was away are missed",
								 machpay_database)));
		else
			ereport(LOG, (errmsg("sse relay listens on " MACHPAY_NOTIFY_CHANNEL " in database \"%s\"",
								 machpay_database)));
		db_lost_logged = db_refused_logged = false;
		if (!db_ever_ready)
			db_ready_at = GetCurrentTimestamp();
		db_ever_ready = true;
	}
	else if (db_query == SSE_QUERY_MISSED)
	{
		if (st == PGRES_TUPLES_OK)
		{
			for (int i = 0; i < PQntuples(res); i++)
				sse_relay_missed_intent(PQgetvalue(res, i, 0));
		}
		else
			ereport(LOG,
					(errmsg("sse relay could not read back missed payment intents: %s",
							PQresultErrorMessage(res))));
	}
}

/*
 * Asks for the payment intents received since the newest one relayed (less
 * a margin), or since the relay first listened, as payment_intent payloads
 * in the writer's format (flusher/intents.c).
 */
static bool
db_send_missed_intents(void)
{
	const char *since = sse_last_intent_created_at();
	char	   *lit;
	char	   *sql;
	bool		ok;

	if (since[0] == '\0')
		since = timestamptz_to_str(db_ready_at);
	lit = PQescapeLiteral(db_conn, since, strlen(since));
	if (lit == NULL)
	{
		db_fail("lost its database connection", PQerrorMessage(db_conn));
		return false;
	}
	sql = psprintf("SELECT '{\"type\":\"payment_intent\",\"id\":' || to_json(id::text)"
				   " || ',\"gateway_id\":' || to_json(gateway_id) || ',\"agent_id\":' || to_json(agent_id)"
				   " || ',\"nonce\":' || to_json(nonce::text) || ',\"amount\":' || to_json(amount::text)"
				   " || ',\"token\":' || to_json(token) || ',\"status\":' || to_json(status)"
				   " || ',\"created_at\":' || to_json(created_at) || '}'"
				   " FROM machpay.payment_intents"
				   " WHERE created_at >= %s::timestamptz - interval '%d s'"
				   " ORDER BY created_at, id LIMIT %d",
				   lit, SSE_MISSED_MARGIN_S, SSE_MISSED_MAX_ROWS);
	PQfreemem(lit);
	ok = db_send(sql, SSE_QUERY_MISSED);
	pfree(sql);
	return ok;
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
	if (budget < SSE_RELAY_TURN_BYTES)
		sse_clients_wake();		/* the window got new events */
	if (db_state == SSE_DB_READY && db_query == SSE_QUERY_NONE && missed_pending)
	{
		missed_pending = false;
		if (!db_send_missed_intents())
			return;
	}
	if (PQflush(db_conn) < 0)
		db_fail("lost its database connection", PQerrorMessage(db_conn));
}

/* ---- the worker ---- */

/*
 * Reload the key cache when keys changed, and close the streams whose key
 * is no longer live.  A failed reload keeps the last keys until auth.c
 * judges them stale (new streams then get 503).
 */
static void
refresh_keys(void)
{
	static uint64 seen_generation = 0;

	if (!auth_refresh(false))
	{
		if (!keys_error_logged)
			ereport(LOG,
					(errmsg("sse relay could not read machpay.ingest_keys"),
					 errdetail("It retries every second; open streams are re-checked once it can.")));
		keys_error_logged = true;
		return;
	}
	keys_error_logged = false;
	if (auth_generation() != seen_generation)
	{
		seen_generation = auth_generation();
		sse_clients_revalidate();
	}
}

static void
load_superuser_name(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	superuser_name = MemoryContextStrdup(TopMemoryContext,
										 GetUserNameFromId(BOOTSTRAP_SUPERUSERID, false));
	CommitTransactionCommand();
}

/*
 * SIGTERM: no new connection, idle ones closed at once, every stream
 * ended normally (HTTP/2 connections get GOAWAY first); the relay exits
 * once those ends went out and their connections closed, or after
 * SSE_STOP_GRACE_MS (a client that reads nothing does not hold it).
 */
static void
stop_serving(void)
{
	uint64		deadline = now_ms() + SSE_STOP_GRACE_MS;
	uint64		now;

	net_begin_drain();
	sse_clients_end_all();
	net_run();
	while (net_connection_count() > 0 && (now = now_ms()) < deadline)
	{
		(void) net_wait((long) Min(deadline - now, (uint64) SSE_LOOP_WAIT_MS));
		net_run();
	}
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
	/* An owner outside transactions, for what registers with one. */
	CurrentResourceOwner = ResourceOwnerCreate(NULL, SSE_ROLE);
	pgstat_report_activity(STATE_RUNNING, "relaying " MACHPAY_NOTIFY_CHANNEL);

	sse_window_init(now_ms() * 1000);
	net_server_init(sse_clients_init(), "sse relay", NULL, NULL);
	open_listeners(true);
	if (net_listener_count() == 0)
		next_bind_attempt = now_ms() + SSE_BIND_RETRY_MS;

	while (!ShutdownRequestPending)
	{
		uint64		now;

		(void) net_wait(notifications_held ? 0 :
						db_state == SSE_DB_CONNECTING ? 10 : SSE_LOOP_WAIT_MS);
		net_run();
		/* Absorbs procsignal barriers (DROP DATABASE waits for them). */
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			NetLimits	limits;

			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			net_limits_from_settings(&limits);
			net_apply_limits(&limits);
		}
		db_poll();
		refresh_keys();
		net_run();				/* what the new events queued goes out now */
		now = now_ms();
		sse_clients_tick(now);
		if (net_listener_count() == 0 && now >= next_bind_attempt)
		{
			open_listeners(false);
			next_bind_attempt = now + SSE_BIND_RETRY_MS;
		}
	}
	stop_serving();
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
