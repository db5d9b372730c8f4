/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The counters of all children, in shared memory made once per server
 * lifetime (kept over graceful restarts): decisions, Redis round trips and
 * latency, each Redis's state and last error, each limit's decisions.
 * What the status page shows.
 */

#ifndef RRL_COUNTERS_H
#define RRL_COUNTERS_H

#include "rrl.h"
#include "rrl_url.h"

/* What all children know of each Redis: up or down since when, the last
 * error.  One slot per URL, in shared memory that survives graceful
 * restarts (a full restart starts afresh) */
#define RRL_MAX_BACKENDS 32
#define RRL_ERR_LEN 200

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

/* Counters of all children (atomic increments, no lock) */
typedef enum {
    RRL_CTR_CHECKED = 0,
    RRL_CTR_ALLOWED,
    RRL_CTR_DENIED,
    RRL_CTR_EXEMPT,
    RRL_CTR_DRY_RUN_DENIED,
    RRL_CTR_FALLBACK_ALLOWED,
    RRL_CTR_FALLBACK_DENIED,
    RRL_CTR_LOCAL_ALLOWED,
    RRL_CTR_LOCAL_DENIED,
    RRL_CTR_DENY_CACHE_HITS,
    RRL_CTR_REDIS_CALLS,
    RRL_CTR_REDIS_ERRORS,
    RRL_CTR_NOSCRIPT,
    RRL_CTR_CONNECTIONS,
    RRL_CTR_BREAKER_OPENINGS,
    RRL_CTR_REDIS_WRITES,
    RRL_CTR_MAX
} rrl_counter_e;

/* What the page shows of each counter: ?auto key, JSON and metric name,
 * and what it counts */
typedef struct {
    const char *key, *json, *help;
} rrl_counter_info_t;

extern const rrl_counter_info_t rrl_counters_info[RRL_CTR_MAX];

/* Redis latency buckets, upper bounds in us (and one more: above) */
extern const apr_int64_t rrl_counters_lat_bounds[];
#define RRL_LAT_BUCKETS 11

typedef struct rrl_limit_stat {
    char name[RRL_NAME_MAX + 1];
    char vhost[128];              /* "" outside any virtual host */
    volatile apr_uint64_t allowed, denied, dry_run_denied;
} rrl_limit_stat_t;

#define RRL_MAX_LIMIT_STATS 256

/* A consistent enough copy of the shared counters */
typedef struct {
    apr_uint64_t n[RRL_CTR_MAX];
    apr_uint64_t lat[RRL_LAT_BUCKETS];
    apr_uint64_t lat_sum, lat_count, lat_max;
} rrl_snapshot_t;

apr_status_t rrl_counters_create(server_rec *s);
rrl_shared_backend_t *rrl_counters_backend(const rrl_redis_url_t *u);
rrl_limit_stat_t *rrl_counters_limit(const rrl_limit_t *l, const char *vhost);
void rrl_counters_count(rrl_counter_e c);
void rrl_counters_add(rrl_counter_e c, apr_uint64_t n);
void rrl_counters_latency(apr_int64_t us);
void rrl_counters_error(rrl_shared_backend_t *sb, const char *err);
const char *rrl_counters_last_error(apr_pool_t *p, rrl_shared_backend_t *sb,
                           apr_time_t *at);
void rrl_counters_snapshot(rrl_snapshot_t *sn);
apr_time_t rrl_counters_started(void);
rrl_limit_stat_t *rrl_counters_limit_at(int i);

#endif /* RRL_COUNTERS_H */
