/*-------------------------------------------------------------------------
 * machpay.h
 *	  Settings and component entry points shared across machpay_receiver.
 *
 * Vocabulary used throughout: an *event* is one JSON object a client sends;
 * a *row* is what it becomes in a table; a *batch* is what one flush
 * commits; a *job* is a scheduled task (rollup, maintenance) and a *run* is
 * one execution of it.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_H
#define MACHPAY_H

#include "datatype/timestamp.h"

#define MACHPAY_EXTENSION_NAME	"machpay_receiver"
#define MACHPAY_SCHEMA			"machpay"
#define MACHPAY_NOTIFY_CHANNEL	"machpay_events"
/* The search_path of every worker and of every function of the schema. */
#define MACHPAY_SAFE_SEARCH_PATH	"pg_catalog, pg_temp"

/* Settings (guc.c).  Units as stored by the GUC machinery. */
extern char *machpay_database;
extern char *machpay_worker_role;	/* "" = bootstrap superuser */
extern char *machpay_listen_addresses;
extern int	machpay_port;
extern int	machpay_sse_port;
extern int	machpay_http_workers;
extern int	machpay_flush_workers;	/* telemetry writers */
extern int	machpay_writers_registered; /* flush processes started, intents writer included */
extern int	machpay_buffer_size_kb;
extern int	machpay_batch_size;
extern int	machpay_flush_interval_ms;
extern int	machpay_max_body_size;	/* bytes */
extern int	machpay_max_events_per_request; /* caps per request; 0 = none */
extern int	machpay_max_rows_per_request;
extern int	machpay_max_rejects_per_request;
extern int	machpay_max_rows_per_body_byte;
extern int	machpay_flush_lock_timeout_ms;	/* 0 = wait for locks forever */
extern bool machpay_telemetry_synchronous_commit;	/* off: lazy telemetry commits */
extern int	machpay_telemetry_wal_step_kb;	/* 0 = WAL flushed at commit only */
extern bool machpay_auth;
extern int	machpay_max_clock_skew_s;
extern int	machpay_rollup_interval_s;	/* 0 = job disabled */
extern int	machpay_maintenance_interval_s; /* 0 = job disabled */
extern char *machpay_archive_directory;
extern char *machpay_tls_cert_file;
extern char *machpay_tls_key_file;
extern int	machpay_sse_max_clients;
extern char *machpay_sse_allow_origin;
extern bool machpay_notify_telemetry;
extern int	machpay_flush_retry_window_s;	/* telemetry retried this long, then dropped */
extern int	machpay_sse_heartbeat_interval_ms;	/* 0 = no heartbeat */
extern int	machpay_max_series_per_entity;	/* 0 = no limit */
extern int	machpay_series_registry_size;	/* series; 0 = no registry */
extern int	machpay_http_max_connections;
extern int	machpay_http_header_timeout_ms;
extern int	machpay_http_idle_timeout_ms;
extern int	machpay_http_max_header_size;	/* bytes */
extern int	machpay_http2_max_streams;
extern int	machpay_http2_max_resets;	/* per 10 s */
extern int	machpay_http2_max_control_frames;	/* per 10 s */
extern int	machpay_http2_body_preread;	/* bytes */
extern int	machpay_http_overload_wait_ms;
extern int	machpay_http_overload_queue;

extern void machpay_define_gucs(void);

/*
 * Shared-memory components: each reports its size at shmem_request time and
 * initialises its segment at shmem_startup time (machpay_receiver.c).
 */
extern Size stats_shmem_size(void);
extern void stats_shmem_init(void);
extern Size notify_shmem_size(void);	/* notify/notify.c: the signing key */
extern void notify_shmem_init(void);
extern Size buffer_shmem_size(void);
extern void buffer_shmem_init(void);
extern void series_registry_shmem_request(void);	/* space and its LWLock */
extern void series_registry_shmem_init(void);

/* Background workers register themselves from _PG_init. */
extern void flusher_register_workers(int telemetry_writers);
extern void http_register_workers(void);
extern void maintenance_register_worker(void);
extern void sse_register_worker(void);

/* worker_common.c: start-up shared by every background worker. */
#include "postmaster/bgworker.h"
extern void machpay_register_worker(const char *function, const char *name,
									const char *type, BgWorkerStartTime start_time,
									int restart_s, Datum arg);
extern void machpay_worker_attach(const char *role);
extern bool machpay_worker_wait_for_extension(const char *role);
extern bool machpay_worker_become_role(const char *role);
extern void machpay_worker_report_and_abort(MemoryContext cxt);

#endif							/* MACHPAY_H */
