/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * What a request holds in the stores beyond its decision.
 */

#include "apr_strings.h"

#include "rrl_private.h"
#include "rrl_reserve.h"
#include "rrl_config.h"
#include "rrl_local.h"
#include "rrl_redis.h"

/* A count= limit's spend, and the store it is in */
typedef struct {
    rrl_item_t it;
    int local;                    /* the local store, else the server's Redis */
} rrl_reserved_t;

/*
 * count= limits reserve at check time what the request would spend (they
 * spend it as any limit does), so that however many requests are in
 * flight at once no more of them can end with a counted status than the
 * limit has; what was spent is given back at log time (rrl_decide_log)
 * unless the final status counts.  A spend never given back (a child
 * killed) expires with the state.
 */
void rrl_reserve_add(request_rec *r, rrl_req_t *rq, const rrl_item_t *items,
                     int n, int local)
{
    int i;

    for (i = 0; i < n; i++) {
        rrl_reserved_t *rs;

        if (!items[i].spent || !items[i].limit->nstatuses) {
            continue;
        }
        if (!rq->reserved) {
            rq->reserved = apr_array_make(r->pool, 2, sizeof(*rs));
        }
        rs = apr_array_push(rq->reserved);
        rs->it = items[i];
        rs->it.mode = RRL_MODE_REFUND;
        rs->local = local;
    }
}

/* The reservations, into pool p (an upgrade's connection: it outlives the
 * request that made them) */
apr_array_header_t *rrl_reserve_copy(apr_pool_t *p,
                                     const apr_array_header_t *reserved)
{
    apr_array_header_t *copy = apr_array_copy(p, reserved);
    int i;

    for (i = 0; i < copy->nelts; i++) {
        rrl_item_t *it = &APR_ARRAY_IDX(copy, i, rrl_reserved_t).it;

        it->key = apr_pstrmemdup(p, it->key, it->keylen);
        if (it->p != &it->limit->p) {
            it->p = apr_pmemdup(p, it->p, sizeof(*it->p));
        }
    }
    return copy;
}

/* Does limit l count final status st (count=)? */
static int rrl_counts(const rrl_limit_t *l, int st)
{
    int j;

    for (j = 0; j < l->nstatuses; j++) {
        if (l->statuses[j] == st) {
            return 1;
        }
    }
    return 0;
}

/*
 * What count= limits reserved is given back when the final status is not
 * one they count, in the store that took it: Redis (one EVALSHA; when it
 * fails, the reservation expires with the state) or the local store.
 */
void rrl_reserve_settle(request_rec *r, rrl_req_t *rq, int status)
{
    rrl_reserved_t *rs = (rrl_reserved_t *)rq->reserved->elts;
    rrl_item_t *items = apr_palloc(r->pool,
                                   sizeof(*items) * rq->reserved->nelts);
    int i, local, n;

    for (local = 0; local < 2; local++) {
        for (i = n = 0; i < rq->reserved->nelts; i++) {
            if (rs[i].local == local
                && !rrl_counts(rs[i].it.limit, status)) {
                items[n++] = rs[i].it;
            }
        }
        if (n && local) {
            rrl_local_decide(r, items, n, apr_time_now());
        }
        else if (n) {
            const rrl_dir_conf_t *dc = ap_get_module_config(
                r->per_dir_config, &redis_ratelimit_module);
            const rrl_srv_conf_t *sc = ap_get_module_config(
                r->server->module_config, &redis_ratelimit_module);
            apr_int64_t now = apr_time_now();

            rrl_redis_decide(r, sc->backend, rrl_config_on_error_name(dc),
                             items, n, &now);
        }
    }
}
