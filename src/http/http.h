/*-------------------------------------------------------------------------
 * http.h
 *	  Declarations shared by the files of the ingest worker: the server loop
 *	  (http.c), POST /v1/ingest (http_ingest.c) and the ops endpoints
 *	  (http_ops.c).
 *
 * A *request* is one HTTP request; a *pending* request is an ingest request
 * whose payment intents wait for the flusher's commit: its answer is sent
 * later from the loop, never by blocking it.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_HTTP_H
#define MACHPAY_HTTP_H

/* h2o is built with its own epoll loop (libh2o-evloop), not libuv. */
#define H2O_USE_LIBUV 0
#include <h2o.h>

#include "lib/stringinfo.h"

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
	int			connections;	/* open client connections */
	int			max_connections;
	bool		answered_from_loop; /* a pending request was answered outside h2o's callbacks */
} HttpWorkerStatus;

extern HttpWorkerStatus http_status;

/* Counting answers by status, and sending them (http.c). */
extern void http_send_json(h2o_req_t *req, int status, const char *reason,
						   const char *body, size_t len);
extern void http_send_error(h2o_req_t *req, int status, const char *reason,
							const char *code, const char *message);
extern void http_count_status(int status);

/* http_ingest.c */
extern void http_ingest_request(h2o_req_t *req);
extern int	http_ingest_poll_pending(bool latch_was_set);	/* returns requests still pending */
extern void http_ingest_fail_pending(const char *why);
extern void http_ingest_refresh_options(void);

/* http_ops.c */
extern void http_ops_healthz(h2o_req_t *req);
extern void http_ops_readyz(h2o_req_t *req);
extern void http_ops_metrics(h2o_req_t *req);

#endif							/* MACHPAY_HTTP_H */
