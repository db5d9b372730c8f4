/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The counters of all children, in shared memory made once per server
 * lifetime (kept over graceful restarts): decisions, Redis round trips and
 * latency, each Redis's state and last error, each limit's decisions and
 * a concurrency limit's requests in flight.  What the status page shows.
 */

#ifndef RRL_COUNTERS_H
#define RRL_COUNTERS_H

#include "rrl.h"
#include "rrl_url.h"

/* What all children know of each Redis: up or down since when, the last
 * error.  One slot per URL, in shared memory that survives graceful
 * restarts (a full restart starts afresh) */
#define RRL_MAX_BACKENDS 32
#define RRL_ERR_LEN 256           /* longer: cut at a word, with "..." */

#define RRL_URL_LEN 160

typedef struct {
    apr_uint64_t id;              /* hash of the URL; 0: a free slot */
    char masked[RRL_URL_LEN];     /* the URL with its password masked */
    volatile apr_uint32_t down;   /* 1 while Redis is lost */
    volatile apr_uint32_t connections;   /* open, in all children */
    apr_int64_t since;            /* when it was lost, or came back (us) */
    apr_int64_t last_error_at;    /* us; under rrl_status->lock: */
    char last_error[RRL_ERR_LEN];
} rrl_shared_backend_t;

/*
 * The counters of all children (atomic increments, no lock), in the order
 * the status page shows them, each with what the page shows of it: the
 * result it counts (RRL_RESULTS: one counter per RATELIMIT_RESULT, NULL
 * for the others), ?auto key, JSON and metric name, and what it counts.
 */
#define RRL_COUNTERS(X) \
    X(CHECKED, NULL, "Checked", "checked", \
      "Requests that limits applied to (exempt ones not included)") \
    RRL_RESULTS(X) \
    X(DENY_CACHE_HITS, NULL, "DenyCacheHits", "deny_cache_hits", \
      "Requests denied from a child's deny cache, without Redis") \
    X(REDIS_CALLS, NULL, "RedisRoundTrips", "redis_round_trips", \
      "Commands sent to Redis for decisions (EVALSHA, SCRIPT LOAD, PING)") \
    X(REDIS_DECISIONS, NULL, "RedisDecisions", "redis_decisions", \
      "Requests Redis decided, alone or in a batch of one EVALSHA") \
    X(REDIS_ERRORS, NULL, "RedisErrors", "redis_errors", \
      "Decisions Redis could not make (down, timed out, wrong reply)") \
    X(NOSCRIPT, NULL, "ScriptLoads", "script_loads", \
      "NOSCRIPT answered by loading the script again") \
    X(CONNECTIONS, NULL, "RedisConnections", "redis_connections", \
      "Connections opened to Redis") \
    X(BREAKER_OPENINGS, NULL, "BreakerOpenings", "breaker_openings", \
      "Times a child stopped asking a failing Redis for a while") \
    X(REDIS_WRITES, NULL, "RedisWrites", "redis_writes", \
      "Writes to Redis, each carrying the commands queued in a child") \
    X(TLS_RESUMED, NULL, "RedisTlsResumed", "redis_tls_resumed", \
      "TLS connections to Redis that resumed an earlier session")

typedef enum {
#define RRL_CTR_ENUM(e, result, key, json, help) RRL_CTR_##e,
    RRL_COUNTERS(RRL_CTR_ENUM)
#undef RRL_CTR_ENUM
    RRL_CTR_MAX
} rrl_counter_e;

/* What the page shows of each counter (RRL_COUNTERS) */
typedef struct {
    const char *result, *key, *json, *help;
} rrl_counter_info_t;

extern const rrl_counter_info_t rrl_counters_info[RRL_CTR_MAX];

/* Redis latency buckets, upper bounds in us (and one more: above) */
extern const apr_int64_t rrl_counters_lat_bounds[];
#define RRL_LAT_BUCKETS 11

/* The counters of one limit: a (name, virtual host) pair of the
 * configuration, each with its own slot */
typedef struct rrl_limit_stat {
    char name[RRL_NAME_MAX + 1];
    char vhost[256];              /* "" outside any virtual host */
    volatile apr_uint64_t allowed, denied, dry_run_denied;
    /* a concurrency limit: this server's requests holding a slot of it
     * (rrl_counters_hold), and the most that ever did at once */
    volatile apr_uint32_t in_flight, peak;
    /* plans=: decisions made with a key's plan (its numbers or off), and
     * plans that did not parse; the minute of the last line logged of
     * those (once a minute, all children together) */
    volatile apr_uint64_t plan_decisions, plan_errors;
    volatile apr_uint32_t plan_logged;
} rrl_limit_stat_t;

/* A consistent enough copy of the shared counters */
typedef struct {
    apr_uint64_t n[RRL_CTR_MAX];
    apr_uint64_t lat[RRL_LAT_BUCKETS];
    apr_uint64_t lat_sum, lat_count, lat_max;
} rrl_snapshot_t;

apr_status_t rrl_counters_create(server_rec *s);
rrl_shared_backend_t *rrl_counters_backend(const rrl_redis_url_t *u);
apr_status_t rrl_counters_limits(server_rec *s, apr_pool_t *ptemp, int n,
                                 const char *const *names,
                                 const char *const *vhosts,
                                 rrl_limit_stat_t **stats);
void rrl_counters_count(rrl_counter_e c);
void rrl_counters_count_result(rrl_result_e res);
void rrl_counters_add(rrl_counter_e c, apr_uint64_t n);
void rrl_counters_latency(apr_int64_t us);
void rrl_counters_error(rrl_shared_backend_t *sb, const char *err);
const char *rrl_counters_last_error(apr_pool_t *p, rrl_shared_backend_t *sb,
                                    apr_time_t *at);
void rrl_counters_snapshot(rrl_snapshot_t *sn);

/* A slot's hold (rrl_counters_hold): an index, or counted without one,
 * or no longer counted */
#define RRL_HOLD_NONE  (-1)
#define RRL_HOLD_ENDED (-2)

apr_status_t rrl_counters_holds_create(server_rec *s, apr_size_t n);
int rrl_counters_hold(rrl_limit_stat_t *st, apr_uint64_t ticket,
                      apr_time_t deadline);
int rrl_counters_rehold(int hold, apr_time_t was, apr_time_t deadline);
void rrl_counters_unhold(rrl_limit_stat_t *st, int hold, apr_time_t was);
void rrl_counters_sweep(apr_time_t now);
apr_time_t rrl_counters_started(void);

#endif /* RRL_COUNTERS_H */
