/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The status handler's ?metrics: every counter in the Prometheus text
 * format.
 */

#include "apr_atomic.h"
#include "apr_strings.h"

#include <string.h>

#include "http_protocol.h"

#include "rrl_private.h"
#include "rrl_metrics.h"
#include "rrl_algo.h"
#include "rrl_config.h"
#include "rrl_counters.h"
#include "rrl_limit.h"
#include "rrl_local.h"
#include "rrl_redis.h"
#include "rrl_script.h"

/* A Prometheus label value: backslash, quote and newline escaped */
static const char *rrl_prom_value(apr_pool_t *p, const char *s)
{
    char *out = apr_palloc(p, 2 * strlen(s) + 1), *o = out;

    for (; *s; s++) {
        if (*s == '\\' || *s == '"') {
            *o++ = '\\';
            *o++ = *s;
        }
        else if (*s == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        }
        else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

/* The le= label of histogram bucket b, in seconds */
const char *rrl_metrics_le(apr_pool_t *p, int b)
{
    return b < RRL_LAT_BUCKETS - 1
           ? apr_psprintf(p, "%g", rrl_counters_lat_bounds[b] / 1e6) : "+Inf";
}

#define RRL_PROM "redis_ratelimit_"

static void rrl_prom_head(request_rec *r, const char *name, const char *type,
                          const char *help)
{
    ap_rvputs(r, "# HELP " RRL_PROM, name, " ", help, "\n# TYPE " RRL_PROM,
              name, " ", type, "\n", NULL);
}

/* A gauge of each Redis, labelled by its URL (password masked): what 0 is
 * up, 1 the time of its last change of state, 2 open connections */
static void rrl_prom_redis_gauge(request_rec *r, const char *name,
                                 const char *help, int what)
{
    int i;

    rrl_prom_head(r, name, "gauge", help);
    for (i = 0; i < rrl_redis_backends()->nelts; i++) {
        rrl_backend_t *be = APR_ARRAY_IDX(rrl_redis_backends(), i,
                                          rrl_backend_t *);
        apr_int64_t v = what == 0 ? !apr_atomic_read32(&be->shared->down)
                      : what == 1 ? apr_time_sec(be->shared->since)
                      : apr_atomic_read32(&be->shared->connections);

        ap_rprintf(r, RRL_PROM "%s{redis=\"%s\"} %" APR_INT64_T_FMT "\n", name,
                   rrl_prom_value(r->pool, be->u->masked), v);
    }
}

/* The local store's series (all 0 while no limit can use it) */
static void rrl_metrics_local(request_rec *r)
{
    rrl_local_stats_t ls;

    rrl_local_stats(&ls);
    rrl_prom_head(r, "local_store_bytes", "gauge", "Shared memory of the "
                  "local store (0: none made, no limit can use it)");
    ap_rprintf(r, RRL_PROM "local_store_bytes %" APR_SIZE_T_FMT "\n",
               ls.bytes);
    rrl_prom_head(r, "local_store_capacity_keys", "gauge", "Keys the local "
                  "store has room for");
    ap_rprintf(r, RRL_PROM "local_store_capacity_keys %" APR_UINT64_T_FMT
               "\n", ls.capacity);
    rrl_prom_head(r, "local_store_keys", "gauge", "Keys in the local store "
                  "whose state has not expired");
    ap_rprintf(r, RRL_PROM "local_store_keys %" APR_UINT64_T_FMT "\n",
               ls.in_use);
    rrl_prom_head(r, "local_store_evictions_total", "counter", "Entries of "
                  "the local store given up for another key's (expired "
                  "ones included)");
    ap_rprintf(r, RRL_PROM "local_store_evictions_total %" APR_UINT64_T_FMT
               "\n", ls.evictions);
    rrl_prom_head(r, "local_store_live_evictions_total", "counter", "Of "
                  "those, entries that still held state: each key started "
                  "afresh early (RateLimitLocalSize too small)");
    ap_rprintf(r, RRL_PROM "local_store_live_evictions_total %"
               APR_UINT64_T_FMT "\n", ls.live_evictions);
}

/* A counter of each limit with plans=: 0 its plan decisions, 1 errors */
static void rrl_metrics_plans(request_rec *r,
                                     const apr_array_header_t *pairs,
                                     int errors)
{
    int i;

    for (i = 0; pairs && i < pairs->nelts; i++) {
        const rrl_limit_t *l = APR_ARRAY_IDX(pairs, i, const rrl_limit_t *);

        if (l->plans != RRL_PLANS_NONE) {
            ap_rprintf(r, RRL_PROM "limit_plan_%s_total{limit=\"%s\","
                       "vhost=\"%s\"} %" APR_UINT64_T_FMT "\n",
                       errors ? "errors" : "decisions",
                       rrl_prom_value(r->pool, l->stat->name),
                       rrl_prom_value(r->pool, l->stat->vhost),
                       apr_atomic_read64(errors ? &l->stat->plan_errors
                                                : &l->stat->plan_decisions));
        }
    }
}

/* Each concurrency limit's requests in flight: gauges */
static void rrl_metrics_slots(request_rec *r,
                                     const apr_array_header_t *pairs)
{
    int i, what;

    for (what = 0; what < 2; what++) {
        int head = 0;

        for (i = 0; pairs && i < pairs->nelts; i++) {
            const rrl_limit_t *l = APR_ARRAY_IDX(pairs, i,
                                                 const rrl_limit_t *);

            if (l->p.algorithm != RRL_ALG_CONCURRENCY) {
                continue;
            }
            if (!head++) {
                rrl_prom_head(r, what ? "limit_in_flight_peak"
                                      : "limit_in_flight", "gauge",
                              what ? "The most requests of this server that "
                                     "held a slot of each concurrency limit "
                                     "at once"
                                   : "Requests of this server holding a "
                                     "slot of each concurrency limit");
            }
            ap_rprintf(r, RRL_PROM "%s{limit=\"%s\",vhost=\"%s\"} %u\n",
                       what ? "limit_in_flight_peak" : "limit_in_flight",
                       rrl_prom_value(r->pool, l->stat->name),
                       rrl_prom_value(r->pool, l->stat->vhost),
                       apr_atomic_read32(what ? &l->stat->peak
                                              : &l->stat->in_flight));
        }
    }
}

void rrl_metrics_write(request_rec *r, const rrl_snapshot_t *sn)
{
    const apr_array_header_t *pairs = rrl_limit_pairs();
    apr_uint64_t cumulative = 0;
    int i;

    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    rrl_prom_head(r, "info", "gauge", "The module's version and the SHA-1 "
                  "of its Redis script");
    ap_rprintf(r, RRL_PROM "info{version=\"" RRL_VERSION "\",script_sha="
               "\"%s\"} 1\n", rrl_script_sha);
    rrl_prom_head(r, "start_time_seconds", "gauge", "When the counters "
                  "started (a full restart starts them afresh)");
    ap_rprintf(r, RRL_PROM "start_time_seconds %" APR_TIME_T_FMT "\n",
               apr_time_sec(rrl_counters_started()));
    rrl_prom_head(r, "requests_total", "counter", "Requests by how their "
                  "limits were decided (RATELIMIT_RESULT)");
    for (i = 0; i < RRL_CTR_MAX; i++) {
        if (rrl_counters_info[i].result) {
            ap_rprintf(r, RRL_PROM "requests_total{result=\"%s\"} %"
                       APR_UINT64_T_FMT "\n", rrl_counters_info[i].result,
                       sn->n[i]);
        }
    }
    for (i = 0; i < RRL_CTR_MAX; i++) {
        const char *name;

        if (rrl_counters_info[i].result) {
            continue;                   /* in requests_total above */
        }
        name = apr_pstrcat(r->pool, i == RRL_CTR_CHECKED ? "requests_checked"
                           : rrl_counters_info[i].json, "_total", NULL);
        rrl_prom_head(r, name, "counter", rrl_counters_info[i].help);
        ap_rprintf(r, RRL_PROM "%s %" APR_UINT64_T_FMT "\n", name, sn->n[i]);
    }
    rrl_prom_head(r, "redis_latency_seconds", "histogram", "Time a decision "
                  "waited for Redis, from joining the child's pipeline to "
                  "its reply");
    for (i = 0; i < RRL_LAT_BUCKETS; i++) {
        cumulative += sn->lat[i];
        ap_rprintf(r, RRL_PROM "redis_latency_seconds_bucket{le=\"%s\"} %"
                   APR_UINT64_T_FMT "\n", rrl_metrics_le(r->pool, i),
                   cumulative);
    }
    ap_rprintf(r, RRL_PROM "redis_latency_seconds_sum %.6f\n"
               RRL_PROM "redis_latency_seconds_count %" APR_UINT64_T_FMT
               "\n", sn->lat_sum / 1e6, cumulative);
    rrl_prom_head(r, "redis_latency_max_seconds", "gauge", "The longest "
                  "wait for Redis since start");
    ap_rprintf(r, RRL_PROM "redis_latency_max_seconds %.6f\n",
               sn->lat_max / 1e6);
    rrl_metrics_local(r);
    if (rrl_redis_backends()->nelts) {
        rrl_prom_redis_gauge(r, "redis_up", "1 while the module reaches "
                             "this Redis, 0 while it is lost", 0);
        rrl_prom_redis_gauge(r, "redis_state_since_seconds", "When this "
                             "Redis was last lost or came back", 1);
        rrl_prom_redis_gauge(r, "redis_connections", "Connections open to "
                             "this Redis, in all children", 2);
    }
    rrl_prom_head(r, "limit_requests_total", "counter", "Decisions of each "
                  "limit: requests it allowed (and spent), denied, or would "
                  "have denied in dry-run");
    for (i = 0; pairs && i < pairs->nelts; i++) {
        rrl_limit_stat_t *st = APR_ARRAY_IDX(
            pairs, i, const rrl_limit_t *)->stat;
        const char *labels;

        labels = apr_psprintf(r->pool, "limit=\"%s\",vhost=\"%s\"",
                              rrl_prom_value(r->pool, st->name),
                              rrl_prom_value(r->pool, st->vhost));
        ap_rprintf(r, RRL_PROM "limit_requests_total{%s,result=\"allowed\"} %"
                   APR_UINT64_T_FMT "\n" RRL_PROM "limit_requests_total{%s,"
                   "result=\"denied\"} %" APR_UINT64_T_FMT "\n" RRL_PROM
                   "limit_requests_total{%s,result=\"dry-run-denied\"} %"
                   APR_UINT64_T_FMT "\n", labels,
                   apr_atomic_read64(&st->allowed), labels,
                   apr_atomic_read64(&st->denied), labels,
                   apr_atomic_read64(&st->dry_run_denied));
    }
    rrl_metrics_slots(r, pairs);
    rrl_prom_head(r, "limit_plan_decisions_total", "counter", "Decisions "
                  "of each limit with plans= made with a key's plan (its "
                  "numbers, or off)");
    rrl_metrics_plans(r, pairs, 0);
    rrl_prom_head(r, "limit_plan_errors_total", "counter", "Plans of each "
                  "limit that did not parse (the directive's RATE decided), "
                  "and changed plans files refused");
    rrl_metrics_plans(r, pairs, 1);
}
