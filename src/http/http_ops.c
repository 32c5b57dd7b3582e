/*-------------------------------------------------------------------------
 * http_ops.c
 *	  The ops endpoints of the ingest workers, served without a key (they
 *	  are protected by machpay.listen_addresses): /healthz, /readyz and
 *	  /metrics in the Prometheus text format.
 *
 * /readyz is 200 only when ingest would work: extension present, not a
 * standby, and the flusher attached to the buffer (buffer_accepting(), the
 * flusher's internal API) so accepted rows can reach the database, and
 * the database taking its writes: 503 while flushes have been failing or
 * one has been stuck (a lock wait) for seconds (buffer_db_stalled()), and
 * while default_transaction_read_only is on (pg_auto_failover holds a
 * promoted standby read-only until the old primary is known demoted),
 * and until the series registry is loaded (requests with metric rows are
 * answered 503 until then).
 * /metrics renders every counter of stats.c (the same numbers as the
 * machpay.stat_receiver view) as machpay_<name>_total; the families of the
 * ingest workers (http_requests_NNN, http_events_*) get labels.  Gauges
 * come from the shared buffer and from this worker.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "utils/json.h"

#include "buffer/buffer.h"
#include "buffer/series_registry.h"
#include "common/machpay.h"
#include "common/stats.h"
#include "http/http.h"
#include "net/http_reply.h"

#define REQUESTS_PREFIX		"http_requests_"
#define CLOSES_PREFIX		"http_closes_"
#define ACCEPTED_PREFIX		"http_events_accepted_"
#define DURATION_PREFIX		"flush_duration_le_"
#define DURATION_SUM		"flush_duration_sum_us"

void
http_ops_healthz(NetRequest *req)
{
	const char *body = "{\"status\":\"ok\"}";

	http_reply_json(req, 200, NULL, body, strlen(body));
}

void
http_ops_readyz(NetRequest *req, const HttpWorkerStatus *status)
{
	const char *reason = NULL;
	StringInfoData buf;

	if (status->state == HTTP_STATE_DRAINING)
		reason = "shutting down";
	else if (!status->extension_ready)
		reason = "extension not installed";
	/* Ready when every ingest worker is: SO_REUSEPORT spreads requests over all. */
	else if (stats_get(STAT_HTTP_WORKERS_READY) < (uint64) http_workers_started)
		reason = "ingest workers starting";
	else if (RecoveryInProgress())
		reason = "standby";
	else if (!buffer_accepting())
		reason = "flusher not running";
	else if (buffer_db_stalled())
		reason = "database not writable: flushes failing";
	else if (DefaultXactReadOnly)
		reason = "database not writable: default_transaction_read_only";
	else if (!series_registry_ready())
		reason = "series registry loading";

	initStringInfo(&buf);
	if (reason == NULL)
	{
		appendStringInfoString(&buf, "{\"ready\":true}");
		http_reply_json(req, 200, NULL, buf.data, buf.len);
	}
	else
	{
		appendStringInfoString(&buf, "{\"ready\":false,\"reason\":");
		escape_json(&buf, reason);
		appendStringInfoChar(&buf, '}');
		http_reply_json(req, 503, NULL, buf.data, buf.len);
	}
}

static void
family(StringInfo out, const char *name, const char *type, const char *help)
{
	appendStringInfo(out, "# HELP machpay_%s %s\n# TYPE machpay_%s %s\n",
					 name, help, name, type);
}

void
http_ops_metrics(NetRequest *req)
{
	StringInfoData out;

	initStringInfo(&out);

	family(&out, "http_requests_total", "counter", "HTTP answers by status.");
	for (int i = 0; i < STAT_COUNTER_COUNT; i++)
	{
		const char *name = stats_name((StatCounter) i);

		if (strncmp(name, REQUESTS_PREFIX, strlen(REQUESTS_PREFIX)) == 0)
			appendStringInfo(&out, "machpay_http_requests_total{status=\"%s\"} " UINT64_FORMAT "\n",
							 name + strlen(REQUESTS_PREFIX), stats_get((StatCounter) i));
	}

	family(&out, "http_connections_closed_total", "counter",
		   "Client connections of the ingest workers closed, by cause.");
	for (int i = 0; i < STAT_COUNTER_COUNT; i++)
	{
		const char *name = stats_name((StatCounter) i);

		if (strncmp(name, CLOSES_PREFIX, strlen(CLOSES_PREFIX)) == 0)
			appendStringInfo(&out, "machpay_http_connections_closed_total{cause=\"%s\"} " UINT64_FORMAT "\n",
							 name + strlen(CLOSES_PREFIX), stats_get((StatCounter) i));
	}

	family(&out, "http_events_total", "counter", "Events received over HTTP by source and outcome.");
	for (int i = 0; i < STAT_COUNTER_COUNT; i++)
	{
		const char *name = stats_name((StatCounter) i);

		if (strncmp(name, ACCEPTED_PREFIX, strlen(ACCEPTED_PREFIX)) == 0)
			appendStringInfo(&out, "machpay_http_events_total{source=\"%s\",outcome=\"accepted\"} " UINT64_FORMAT "\n",
							 name + strlen(ACCEPTED_PREFIX), stats_get((StatCounter) i));
	}
	appendStringInfo(&out, "machpay_http_events_total{source=\"any\",outcome=\"rejected\"} " UINT64_FORMAT "\n",
					 stats_get(STAT_HTTP_EVENTS_REJECTED));
	appendStringInfo(&out, "machpay_http_events_total{source=\"any\",outcome=\"refused\"} " UINT64_FORMAT "\n",
					 stats_get(STAT_HTTP_EVENTS_REFUSED));
	/* Telemetry bodies that waited for a later turn (payment intents first). */
	appendStringInfo(&out, "machpay_http_bodies_deferred_total " UINT64_FORMAT "\n",
					 stats_get(STAT_HTTP_BODIES_DEFERRED));

	/* The flusher's cumulative histogram: flush_duration_le_<N>ms, _inf. */
	family(&out, "flush_duration_seconds", "histogram", "Time a flush takes, commit included.");
	for (int i = 0; i < STAT_COUNTER_COUNT; i++)
	{
		const char *name = stats_name((StatCounter) i);
		const char *le;

		if (name == NULL || strncmp(name, DURATION_PREFIX, strlen(DURATION_PREFIX)) != 0)
			continue;
		le = name + strlen(DURATION_PREFIX);
		if (strcmp(le, "inf") == 0)
		{
			appendStringInfo(&out, "machpay_flush_duration_seconds_bucket{le=\"+Inf\"} " UINT64_FORMAT "\n",
							 stats_get((StatCounter) i));
			appendStringInfo(&out, "machpay_flush_duration_seconds_count " UINT64_FORMAT "\n",
							 stats_get((StatCounter) i));
		}
		else
			appendStringInfo(&out, "machpay_flush_duration_seconds_bucket{le=\"%g\"} " UINT64_FORMAT "\n",
							 atof(le) / 1000.0, stats_get((StatCounter) i));
	}
	for (int i = 0; i < STAT_COUNTER_COUNT; i++)
	{
		const char *name = stats_name((StatCounter) i);

		if (name != NULL && strcmp(name, DURATION_SUM) == 0)
			appendStringInfo(&out, "machpay_flush_duration_seconds_sum %.6f\n",
							 stats_get((StatCounter) i) / 1000000.0);
	}

	/* Every other counter, under its own name. */
	for (int i = 0; i < STAT_COUNTER_COUNT; i++)
	{
		const char *name = stats_name((StatCounter) i);

		if (name == NULL || strncmp(name, "http_", 5) == 0 ||
			strncmp(name, "flush_duration_", 15) == 0)
			continue;
		appendStringInfo(&out, "# TYPE machpay_%s_total counter\nmachpay_%s_total " UINT64_FORMAT "\n",
						 name, name, stats_get((StatCounter) i));
	}

	family(&out, "buffer_bytes_used", "gauge", "Bytes of request rows waiting in the shared buffer.");
	appendStringInfo(&out, "machpay_buffer_bytes_used %zu\n", (size_t) buffer_bytes_used());
	family(&out, "buffer_bytes_capacity", "gauge", "Size of the shared buffer.");
	appendStringInfo(&out, "machpay_buffer_bytes_capacity %zu\n", (size_t) buffer_capacity());
	family(&out, "intents_waiting", "gauge", "Requests whose payment intents wait for a commit.");
	appendStringInfo(&out, "machpay_intents_waiting %d\n", buffer_intents_waiting());
	family(&out, "http_workers_ready", "gauge", "Ingest workers serving requests (of machpay.http_workers).");
	appendStringInfo(&out, "machpay_http_workers_ready " UINT64_FORMAT "\n", stats_get(STAT_HTTP_WORKERS_READY));
	family(&out, "http_connections", "gauge", "Open client connections of this ingest worker.");
	appendStringInfo(&out, "machpay_http_connections %d\n", net_connection_count());

	http_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
					out.data, out.len);
}
