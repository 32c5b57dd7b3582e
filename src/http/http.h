/*-------------------------------------------------------------------------
 * http.h
 *	  Declarations shared by the files of the ingest worker: the worker and
 *	  its loop (http.c), POST /v1/ingest (http_ingest.c) and the ops
 *	  endpoints (http_ops.c).  Calls go one way: http.c -> endpoints ->
 *	  http_reply.c / net_reply.c.
 *
 * A *request* is one HTTP request; a *pending* request is an ingest request
 * whose payment intents wait for the flusher's commit: its answer is sent
 * later from the loop, never by blocking it.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_HTTP_H
#define MACHPAY_HTTP_H

#include "net/net.h"

/* State of the worker, shown in pg_stat_activity. */
typedef enum HttpWorkerState
{
	HTTP_STATE_STARTING,		/* listening, extension not seen yet */
	HTTP_STATE_SERVING,			/* extension exists: ingest is open */
	HTTP_STATE_DRAINING,		/* SIGTERM: not accepting, finishing requests */
} HttpWorkerState;

/* What the loop knows, refreshed between iterations (http.c). */
typedef struct HttpWorkerStatus
{
	HttpWorkerState state;
	bool		extension_ready;	/* extension exists in machpay.database */
	bool		in_recovery;	/* standby: no ingest */
} HttpWorkerStatus;

/* http_ingest.c: the head decides, then the body is mapped */
extern void http_ingest_headers(NetRequest *req, const HttpWorkerStatus *status);
extern void http_ingest_body(NetRequest *req);
extern void http_ingest_begin_turn(void);
extern NetRequest *http_ingest_next_deferred(void);
extern void http_ingest_map_deferred(NetRequest *req);
extern int	http_ingest_deferred(void);	/* bodies waiting for a turn */
extern long http_ingest_deferred_wait_ms(long idle_ms);
extern int	http_ingest_poll_pending(bool latch_was_set);	/* returns requests still pending */
extern void http_ingest_fail_pending(const char *why);
extern void http_ingest_refresh_options(void);

/* http_ops.c */
/* http.c: ingest workers the postmaster registered. */
extern int	http_workers_started;

extern void http_ops_healthz(NetRequest *req);
extern void http_ops_readyz(NetRequest *req, const HttpWorkerStatus *status);
extern void http_ops_metrics(NetRequest *req);

#endif							/* MACHPAY_HTTP_H */
