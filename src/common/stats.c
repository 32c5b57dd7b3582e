/*-------------------------------------------------------------------------
 * stats.c
 *	  Shared-memory counters (stats.h) and the SQL function behind the
 *	  machpay.stat_receiver view.
 *
 * Counters are lock-free atomics so that hot paths in any process can bump
 * them; before shared memory exists (library not preloaded) they count
 * nothing rather than fail.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/builtins.h"

#include "common/machpay.h"
#include "common/stats.h"

typedef struct StatsShared
{
	pg_atomic_uint64 counters[STAT_COUNTER_COUNT];
} StatsShared;

static StatsShared *stats_shared = NULL;

static const char *const stats_names[STAT_COUNTER_COUNT] = {
	[STAT_CONFIG_UNKNOWN_GATEWAY] = "config_unknown_gateway",
	[STAT_CONFIG_UPDATES] = "config_updates",
	[STAT_CONFIG_STALE] = "config_stale",
	[STAT_ROWS_METRICS] = "rows_metrics",
	[STAT_ROWS_DEBUG_LOGS] = "rows_debug_logs",
	[STAT_ROWS_PAYMENT_INTENTS] = "rows_payment_intents",
	[STAT_ROWS_INGEST_REJECTS] = "rows_ingest_rejects",
	[STAT_INTENTS_DUPLICATE] = "intents_duplicate",
	[STAT_SERIES_REMOVALS] = "series_removals",
	[STAT_ROWS_SERIES_LIMIT] = "rows_dropped_series_limit",
	[STAT_EVENTS_SERIES_LIMIT] = "events_rejected_series_limit",
	[STAT_EVENTS_ACCEPTED] = "events_accepted",
	[STAT_EVENTS_REJECTED] = "events_rejected",
	[STAT_FLUSHES] = "flushes",
	[STAT_FLUSH_FAILURES] = "flush_failures",
	[STAT_FLUSH_EVENTS] = "flush_events",
	[STAT_EVENTS_DROPPED] = "events_dropped",
	[STAT_INTENTS_FAILED] = "intents_failed",
	[STAT_FLUSH_DURATION_LE_1MS] = "flush_duration_le_1ms",
	[STAT_FLUSH_DURATION_LE_5MS] = "flush_duration_le_5ms",
	[STAT_FLUSH_DURATION_LE_10MS] = "flush_duration_le_10ms",
	[STAT_FLUSH_DURATION_LE_50MS] = "flush_duration_le_50ms",
	[STAT_FLUSH_DURATION_LE_100MS] = "flush_duration_le_100ms",
	[STAT_FLUSH_DURATION_LE_500MS] = "flush_duration_le_500ms",
	[STAT_FLUSH_DURATION_LE_1000MS] = "flush_duration_le_1000ms",
	[STAT_FLUSH_DURATION_LE_INF] = "flush_duration_le_inf",
	[STAT_FLUSH_DURATION_SUM_US] = "flush_duration_sum_us",
	[STAT_AUTH_KEY_CHANGES] = "auth_key_changes",
	[STAT_HTTP_REQUESTS_200] = "http_requests_200",
	[STAT_HTTP_REQUESTS_202] = "http_requests_202",
	[STAT_HTTP_REQUESTS_400] = "http_requests_400",
	[STAT_HTTP_REQUESTS_401] = "http_requests_401",
	[STAT_HTTP_REQUESTS_403] = "http_requests_403",
	[STAT_HTTP_REQUESTS_404] = "http_requests_404",
	[STAT_HTTP_REQUESTS_405] = "http_requests_405",
	[STAT_HTTP_REQUESTS_408] = "http_requests_408",
	[STAT_HTTP_REQUESTS_411] = "http_requests_411",
	[STAT_HTTP_REQUESTS_413] = "http_requests_413",
	[STAT_HTTP_REQUESTS_415] = "http_requests_415",
	[STAT_HTTP_REQUESTS_422] = "http_requests_422",
	[STAT_HTTP_REQUESTS_429] = "http_requests_429",
	[STAT_HTTP_REQUESTS_500] = "http_requests_500",
	[STAT_HTTP_REQUESTS_503] = "http_requests_503",
	[STAT_HTTP_REQUESTS_OTHER] = "http_requests_other",
	[STAT_HTTP_EVENTS_ACCEPTED_GATEWAY] = "http_events_accepted_gateway",
	[STAT_HTTP_EVENTS_ACCEPTED_SDK] = "http_events_accepted_sdk",
	[STAT_HTTP_EVENTS_ACCEPTED_PAYMENT_INTENT] = "http_events_accepted_payment_intent",
	[STAT_HTTP_EVENTS_ACCEPTED_LOG] = "http_events_accepted_log",
	[STAT_HTTP_EVENTS_REJECTED] = "http_events_rejected",
	[STAT_HTTP_EVENTS_REFUSED] = "http_events_refused",
	[STAT_HTTP_BODIES_DEFERRED] = "http_bodies_deferred",
	[STAT_HTTP_CLOSES_PEER] = "http_closes_peer",
	[STAT_HTTP_CLOSES_CLIENT_ASKED] = "http_closes_client_asked",
	[STAT_HTTP_CLOSES_IDLE] = "http_closes_idle_timeout",
	[STAT_HTTP_CLOSES_HEADER_TIMEOUT] = "http_closes_header_timeout",
	[STAT_HTTP_CLOSES_BODY_TIMEOUT] = "http_closes_body_timeout",
	[STAT_HTTP_CLOSES_WRITE_STALL] = "http_closes_write_stall",
	[STAT_HTTP_CLOSES_REFUSED_BODY] = "http_closes_refused_body",
	[STAT_HTTP_CLOSES_PROTOCOL_ERROR] = "http_closes_protocol_error",
	[STAT_HTTP_CLOSES_ABUSE] = "http_closes_abuse",
	[STAT_HTTP_CLOSES_TLS] = "http_closes_tls_error",
	[STAT_HTTP_CLOSES_ERROR] = "http_closes_error",
	[STAT_HTTP_CLOSES_SHUTDOWN] = "http_closes_shutdown",
	[STAT_HTTP_CLOSES_CONNECTION_LIMIT] = "http_closes_connection_limit",
	[STAT_HTTP_CLOSES_OTHER] = "http_closes_other",
	[STAT_HTTP_WORKERS_READY] = "http_workers_ready",
	[STAT_SSE_NOTIFICATIONS_FORGED] = "sse_notifications_forged",
	[STAT_SSE_NOTIFICATIONS_REPLAYED] = "sse_notifications_replayed",
	[STAT_SSE_NOTIFICATIONS_INVALID] = "sse_notifications_invalid",
	[STAT_SSE_INTENTS_REPLAYED] = "sse_intents_replayed",
	[STAT_PARTMAN_CALLS_REFUSED] = "partman_calls_refused",
};

Size
stats_shmem_size(void)
{
	return MAXALIGN(sizeof(StatsShared));
}

void
stats_shmem_init(void)
{
	bool		found;

	stats_shared = ShmemInitStruct("machpay_receiver stats", stats_shmem_size(), &found);
	if (!found)
	{
		for (int i = 0; i < STAT_COUNTER_COUNT; i++)
			pg_atomic_init_u64(&stats_shared->counters[i], 0);
	}
}

void
stats_add(StatCounter counter, int64 n)
{
	if (stats_shared != NULL && n != 0)
		pg_atomic_fetch_add_u64(&stats_shared->counters[counter], (uint64) n);
}

uint64
stats_get(StatCounter counter)
{
	return stats_shared ? pg_atomic_read_u64(&stats_shared->counters[counter]) : 0;
}

const char *
stats_name(StatCounter counter)
{
	return stats_names[counter];
}

PG_FUNCTION_INFO_V1(machpay_stat_counters);

/* SETOF (name text, value bigint): one row per counter. */
Datum
machpay_stat_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < STAT_COUNTER_COUNT; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(stats_names[i]);
		values[1] = Int64GetDatum((int64) stats_get((StatCounter) i));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
