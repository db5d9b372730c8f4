/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * What a request holds in the stores beyond its decision.
 */

#include "apr_atomic.h"
#include "apr_general.h"
#include "apr_strings.h"

#include "util_filter.h"

#include <unistd.h>

#include "rrl_private.h"
#include "rrl_reserve.h"
#include "rrl_config.h"
#include "rrl_counters.h"
#include "rrl_local.h"
#include "rrl_redis.h"
#include "rrl_util.h"

/* A count= limit's spend or a concurrency slot, and the store it is in */
typedef struct {
    rrl_item_t it;
    int local;                    /* the local store, else the server's Redis */
    /* a concurrency slot: */
    int hold;                     /* its hold on the status page's gauge */
    apr_time_t deadline;          /* of the hold: the lease, by our clock */
    int lost;                     /* its lease ran out: nothing to release */
} rrl_reserved_t;

static ap_filter_rec_t *rrl_lease_filter_handle;

/* Each concurrency slot is named by a ticket unique to its request across
 * every instance: a random start per child, then a count */
static apr_uint64_t rrl_ticket_base;
static volatile apr_uint64_t rrl_tickets;

void rrl_reserve_child_init(apr_pool_t *pchild)
{
    (void)pchild;
    if (apr_generate_random_bytes((unsigned char *)&rrl_ticket_base,
                                  sizeof(rrl_ticket_base)) != APR_SUCCESS) {
        rrl_ticket_base = ((apr_uint64_t)getpid() << 40)
                          ^ (apr_uint64_t)apr_time_now();
    }
}

apr_uint64_t rrl_reserve_ticket(void)
{
    return rrl_ticket_base + apr_atomic_inc64(&rrl_tickets);
}

static int rrl_is_slot(const rrl_item_t *it)
{
    return it->p->algorithm == RRL_ALG_CONCURRENCY;
}

/* The slots' leases are renewed a third of the way through, so that a
 * renewal that fails once is tried again before the lease runs out */
static apr_time_t rrl_renew_after(const rrl_item_t *it)
{
    return it->p->period / 3;
}

static apr_status_t rrl_reserve_cleanup(void *data);

/* The request holds slots: they are released at log time, else when its
 * pool goes (rrl_reserve_cleanup), and renewed as its response goes out
 * (the lease filter) */
static void rrl_reserve_hold(request_rec *r, rrl_req_t *rq)
{
    if (rq->holding) {
        return;
    }
    rq->holding = 1;
    apr_pool_pre_cleanup_register(r->pool, r, rrl_reserve_cleanup);
    ap_add_output_filter_handle(rrl_lease_filter_handle, rq, r,
                                r->connection);
}

/*
 * count= limits reserve at check time what the request would spend (they
 * spend it as any limit does), so that however many requests are in
 * flight at once no more of them can end with a counted status than the
 * limit has; what was spent is given back at log time (rrl_decide_log)
 * unless the final status counts.  A spend never given back (a child
 * killed) expires with the state.  A concurrency slot taken is held
 * until the request ends; one never released (a child killed) is freed
 * by its lease.
 */
void rrl_reserve_add(request_rec *r, rrl_req_t *rq, const rrl_item_t *items,
                     int n, int local)
{
    apr_time_t now = 0;
    int i, slots = 0;

    for (i = 0; i < n; i++) {
        rrl_reserved_t *rs;

        if (!items[i].spent
            || (!items[i].limit->nstatuses && !rrl_is_slot(&items[i]))) {
            continue;
        }
        if (!rq->reserved) {
            rq->reserved = apr_array_make(r->pool, 2, sizeof(*rs));
        }
        rs = apr_array_push(rq->reserved);
        rs->it = items[i];
        rs->it.mode = RRL_MODE_REFUND;
        rs->local = local;
        rs->hold = -1;
        rs->lost = 0;
        if (rrl_is_slot(&items[i])) {
            apr_time_t at;

            now = now ? now : apr_time_now();
            rs->deadline = now + items[i].p->period;
            rs->hold = rrl_counters_hold(items[i].limit->stat,
                                         items[i].ticket, rs->deadline);
            at = now + rrl_renew_after(&items[i]);
            rq->renew_at = rq->renew_at && rq->renew_at < at ? rq->renew_at
                                                             : at;
            slots++;
        }
    }
    if (slots) {
        rrl_reserve_hold(r, rq);
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

        it->key = rrl_util_strmemdup(p, it->key, it->keylen);
        if (it->p != &it->limit->p) {
            it->p = apr_pmemdup(p, it->p, sizeof(*it->p));
        }
    }
    return copy;
}

/* Stream 1 of an upgrade took over the reservations (a copy of
 * rrl_reserve_copy) of the upgrading request: it releases its slots.  A
 * slot of an upgrade whose stream 1 never runs is freed by its lease. */
void rrl_reserve_take_over(request_rec *r, rrl_req_t *rq)
{
    int i;

    rq->holding = 0;
    for (i = 0; rq->reserved && i < rq->reserved->nelts; i++) {
        if (rrl_is_slot(&APR_ARRAY_IDX(rq->reserved, i, rrl_reserved_t).it)) {
            rrl_reserve_hold(r, rq);
            break;
        }
    }
}

/* items in their store: the local store, or the server's Redis; 1 when it
 * answered */
static int rrl_reserve_store(request_rec *r, rrl_item_t *items, int n,
                             int local, apr_int64_t now)
{
    const rrl_dir_conf_t *dc;
    const rrl_srv_conf_t *sc;

    if (local) {
        return rrl_local_decide(r, items, n, now) == APR_SUCCESS;
    }
    dc = ap_get_module_config(r->per_dir_config, &redis_ratelimit_module);
    sc = ap_get_module_config(r->server->module_config,
                              &redis_ratelimit_module);
    return rrl_redis_decide(r, sc->backend, rrl_config_on_error_name(dc),
                            items, n, &now) == RRL_REDIS_OK;
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

/* A release that failed is tried once more, then left to the lease.  A
 * release is the same whether it happened once or twice (a member
 * removed); a count= give-back is not (Redis may have applied one whose
 * reply was lost): those are left to expire with their state. */
static void rrl_reserve_again(request_rec *r, rrl_item_t *items, int n,
                              int local)
{
    int i, m;

    for (i = m = 0; i < n; i++) {
        if (rrl_is_slot(&items[i])) {
            items[m++] = items[i];
        }
    }
    if (m) {
        rrl_reserve_store(r, items, m, local, apr_time_now());
    }
}

/*
 * The request ended with final status status: what count= limits
 * reserved is given back when the status is not one they count, and every
 * slot is released, in the store that took it: Redis (one EVALSHA, in the
 * child's pipeline; when it fails, the reservation expires with the
 * state, the slot is tried once more and else left to its lease) or the
 * local store.  status -1: the
 * request's pool went without a log phase (slots released, reservations
 * kept).  Once: nothing is held afterwards.
 */
void rrl_reserve_settle(request_rec *r, rrl_req_t *rq, int status)
{
    rrl_reserved_t *rs = (rrl_reserved_t *)rq->reserved->elts;
    rrl_item_t *items = apr_palloc(r->pool,
                                   sizeof(*items) * rq->reserved->nelts);
    int i, local, n;

    for (local = 0; local < 2; local++) {
        for (i = n = 0; i < rq->reserved->nelts; i++) {
            if (rs[i].local != local) {
                continue;
            }
            if (rrl_is_slot(&rs[i].it) ? !rs[i].lost
                : status >= 0 && !rrl_counts(rs[i].it.limit, status)) {
                items[n++] = rs[i].it;
            }
        }
        if (n && (rrl_util_fault("fail-release")
                  || !rrl_reserve_store(r, items, n, local,
                                        apr_time_now()))) {
            rrl_reserve_again(r, items, n, local);
        }
    }
    /* the status page counts a slot until the store has it back */
    for (i = 0; i < rq->reserved->nelts; i++) {
        if (rrl_is_slot(&rs[i].it) && !rs[i].lost) {
            rrl_counters_unhold(rs[i].it.limit->stat, rs[i].hold,
                                rs[i].deadline);
        }
    }
    rq->reserved = NULL;
    rq->renew_at = 0;
}

/* The request's pool goes: slots not released at log time (the request
 * was aborted, its connection lost) are now */
static apr_status_t rrl_reserve_cleanup(void *data)
{
    request_rec *r = data;
    rrl_req_t *rq = ap_get_module_config(r->request_config,
                                         &redis_ratelimit_module);

    if (rq && rq->reserved) {
        rrl_reserve_settle(r, rq, -1);
    }
    return APR_SUCCESS;
}

/*
 * The slots' leases renewed, in each store: a slot still held gets a
 * whole lease from now, one whose lease ran out (a response that went
 * quiet for longer) is lost, neither renewed nor taken again.  A store
 * that fails is asked again at the next renewal.
 */
static void rrl_reserve_renew(request_rec *r, rrl_req_t *rq)
{
    rrl_reserved_t *rs = (rrl_reserved_t *)rq->reserved->elts;
    int nres = rq->reserved->nelts;
    rrl_item_t *items = apr_palloc(r->pool, sizeof(*items) * nres);
    int *of = apr_palloc(r->pool, sizeof(*of) * nres);
    apr_time_t now = apr_time_now(), next = 0;
    int i, k, local, n;

    for (local = 0; local < 2; local++) {
        for (i = n = 0; i < nres; i++) {
            if (rs[i].local == local && rrl_is_slot(&rs[i].it)
                && !rs[i].lost) {
                of[n] = i;
                items[n] = rs[i].it;
                items[n++].mode = RRL_MODE_RENEW;
            }
        }
        if (!n || !rrl_reserve_store(r, items, n, local, now)) {
            continue;
        }
        for (k = 0; k < n; k++) {
            rrl_reserved_t *s = &rs[of[k]];

            if (items[k].reset > 0) {
                s->it.until = now;       /* the local store's epoch */
                if (s->hold >= 0
                    && !rrl_counters_rehold(s->hold, s->deadline,
                                            now + s->it.p->period)) {
                    s->hold = RRL_HOLD_ENDED;   /* swept meanwhile */
                }
                s->deadline = now + s->it.p->period;
            }
            else {
                s->lost = 1;
                rrl_counters_unhold(s->it.limit->stat, s->hold, s->deadline);
            }
        }
    }
    for (i = 0; i < nres; i++) {
        if (rrl_is_slot(&rs[i].it) && !rs[i].lost) {
            apr_time_t at = now + rrl_renew_after(&rs[i].it);

            next = next && next < at ? next : at;
        }
    }
    rq->renew_at = next;
}

/* RATELIMIT_LEASE: as the response goes out, the slots' leases are renewed
 * when a third of a lease has passed */
static apr_status_t rrl_lease_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    rrl_req_t *rq = f->ctx;

    if (!rq->reserved || !rq->renew_at) {
        ap_remove_output_filter(f);
    }
    else if (apr_time_now() >= rq->renew_at) {
        rrl_reserve_renew(f->r, rq);
    }
    return ap_pass_brigade(f->next, bb);
}

void rrl_reserve_register(void)
{
    rrl_lease_filter_handle = ap_register_output_filter(
        RRL_LEASE_FILTER, rrl_lease_filter, NULL, AP_FTYPE_PROTOCOL);
}
