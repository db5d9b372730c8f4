/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * plans= on a request's path.
 */

#include "apr_atomic.h"
#include "apr_strings.h"
#include "apr_thread_mutex.h"

#include <string.h>

#include "rrl_private.h"
#include "rrl_plan.h"
#include "rrl_algo.h"
#include "rrl_counters.h"
#include "rrl_limit.h"
#include "rrl_local.h"
#include "rrl_plan_file.h"
#include "rrl_util.h"

#define RRL_PLAN_PREFIX "plan/"         /* PREFIX plan/[VHOST:]NAME:VALUE */
#define RRL_PLAN_PREFIX_LEN 5

/*
 * Each child's memory of the plans Redis gave (plans=redis): the last one
 * the script read for each of up to 4,096 keys (a key's own plan, off, or
 * none: forgotten), so that RateLimitOnError local decides with them while
 * Redis fails.  Bounded: 4-way buckets, the one seen longest ago gives way.
 */
#define RRL_PLAN_WAYS 4
#define RRL_PLAN_BUCKETS 1024

typedef struct {
    apr_uint64_t h[2];            /* the counting key's (rrl_local_hash) */
    apr_int64_t count, period;    /* of the plan; count 0: off */
    apr_int64_t burst;            /* 0: not given */
    apr_time_t seen;              /* 0: a free slot */
} rrl_plan_seen_t;

static rrl_plan_seen_t *rrl_plan_seen;      /* per child */
static apr_thread_mutex_t *rrl_plan_mutex;

/* Made in each child that sends limits to Redis, when a limit has
 * plans=redis; without it, RateLimitOnError local decides with the
 * directives' RATEs */
void rrl_plan_child_init(apr_pool_t *pchild, server_rec *s)
{
    const apr_array_header_t *all = rrl_limit_all();
    apr_status_t rv;
    int i;

    for (i = 0; all && i < all->nelts; i++) {
        if (APR_ARRAY_IDX(all, i, rrl_limit_t *)->plans == RRL_PLANS_REDIS) {
            break;
        }
    }
    if (!all || i == all->nelts) {
        return;
    }
    rrl_plan_seen = apr_pcalloc(pchild, sizeof(*rrl_plan_seen)
                                        * RRL_PLAN_WAYS * RRL_PLAN_BUCKETS);
    rv = apr_thread_mutex_create(&rrl_plan_mutex, APR_THREAD_MUTEX_DEFAULT,
                                 pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, RRL_LOGNO(00067)
                     "cannot create this child's memory of plans; while "
                     "Redis fails, RateLimitOnError local decides with the "
                     "directives' RATEs");
        rrl_plan_seen = NULL;
    }
}

static rrl_plan_seen_t *rrl_plan_bucket(const apr_uint64_t h[2])
{
    return &rrl_plan_seen[(h[1] % RRL_PLAN_BUCKETS) * RRL_PLAN_WAYS];
}

/* What Redis said of an item's plan, into the memory (the mutex held) */
static void rrl_plan_remember(rrl_item_t *it, apr_time_t now)
{
    const apr_uint64_t *h = rrl_local_hash(it);
    rrl_plan_seen_t *b = rrl_plan_bucket(h), *slot = NULL;
    const rrl_params_t *p = it->p;
    int j;

    for (j = 0; j < RRL_PLAN_WAYS; j++) {
        if (b[j].seen && b[j].h[0] == h[0] && b[j].h[1] == h[1]) {
            slot = &b[j];
            break;
        }
    }
    if (it->plan != RRL_PLAN_APPLIED && it->plan != RRL_PLAN_OFF) {
        if (slot) {
            slot->seen = 0;       /* no plan now: forgotten */
        }
        return;
    }
    for (j = 0; !slot && j < RRL_PLAN_WAYS; j++) {
        if (!slot || b[j].seen < slot->seen) {
            slot = &b[j];         /* a free one, else the oldest */
        }
    }
    slot->h[0] = h[0];
    slot->h[1] = h[1];
    slot->count = it->plan == RRL_PLAN_OFF ? 0 : p->count;
    slot->period = p->period;
    slot->burst = p->algorithm == RRL_ALG_GCRA
                  || p->algorithm == RRL_ALG_TOKEN_BUCKET ? p->burst : 0;
    slot->seen = now;
}

/* The plan an item's key had when Redis last said, if this child knows */
static int rrl_plan_recall(rrl_item_t *it, rrl_algo_plan_t *pl)
{
    const apr_uint64_t *h = rrl_local_hash(it);
    rrl_plan_seen_t *b = rrl_plan_bucket(h);
    int j, found = 0;

    apr_thread_mutex_lock(rrl_plan_mutex);
    for (j = 0; j < RRL_PLAN_WAYS; j++) {
        if (b[j].seen && b[j].h[0] == h[0] && b[j].h[1] == h[1]) {
            memset(pl, 0, sizeof(*pl));
            pl->off = b[j].count == 0;
            pl->count = b[j].count;
            pl->period = b[j].period;
            pl->burst = b[j].burst;
            found = 1;
            break;
        }
    }
    apr_thread_mutex_unlock(rrl_plan_mutex);
    return found;
}

/* Item it decides by plan pl: its numbers, or off */
static void rrl_plan_apply(request_rec *r, rrl_item_t *it,
                           const rrl_algo_plan_t *pl)
{
    rrl_params_t *rp;

    if (pl->off) {
        it->plan = RRL_PLAN_OFF;
        return;
    }
    rp = apr_palloc(r->pool, sizeof(*rp));
    if (rrl_algo_plan_params(r->pool, pl, &it->limit->p, it->cost, rp)
        == NULL) {
        it->p = rp;
        it->plan = RRL_PLAN_APPLIED;
    }
}

/* An item whose plan is off: counted, and left out of the decision */
static int rrl_plan_off(const rrl_item_t *it)
{
    if (it->plan != RRL_PLAN_OFF) {
        return 0;
    }
    if (it->limit->stat) {
        apr_atomic_inc64(&it->limit->stat->plan_decisions);
    }
    return 1;
}

/*
 * Before the items are decided: plans=redis, where Redis decides, names
 * the key of each one's plan, PREFIX plan/[VHOST:]NAME:VALUE (its counting
 * key with plan/ after the prefix: with a hash tag under Cluster, so in
 * its slot); plans=FILE gives the file's plan of its value.  An item
 * whose plan is off is left out.  How many are left.
 */
int rrl_plan_items(request_rec *r, rrl_item_t *items, int n,
                   const char *prefix, int tag, int redis)
{
    apr_size_t pl = strlen(prefix);
    int i, k;

    for (i = k = 0; i < n; i++) {
        rrl_item_t *it = &items[i];
        const rrl_limit_t *l = it->limit;

        it->plan_key = NULL;
        it->plan = RRL_PLAN_NONE;
        if (l->plans == RRL_PLANS_REDIS && redis) {
            char *key = apr_palloc(r->pool, it->keylen + RRL_PLAN_PREFIX_LEN
                                            + 1);

            memcpy(key, it->key, pl);
            memcpy(key + pl, RRL_PLAN_PREFIX, RRL_PLAN_PREFIX_LEN);
            memcpy(key + pl + RRL_PLAN_PREFIX_LEN, it->key + pl,
                   it->keylen - pl + 1);
            it->plan_key = key;
            it->plan_keylen = it->keylen + RRL_PLAN_PREFIX_LEN;
        }
        else if (l->plans == RRL_PLANS_FILE && l->plan_file) {
            /* the value: what the key has after "NAME:" (or "NAME:{") */
            apr_size_t at = pl + strlen(l->scope) + strlen(l->name) + 1
                            + (tag ? 1 : 0);
            rrl_algo_plan_t plan;

            rrl_plan_file_refresh(r, l->plan_file);
            if (it->keylen > at + (tag ? 1 : 0)
                && rrl_plan_file_lookup(l->plan_file, it->key + at,
                                        it->keylen - at - (tag ? 1 : 0),
                                        &plan)) {
                rrl_plan_apply(r, it, &plan);
            }
            if (rrl_plan_off(it)) {
                continue;
            }
        }
        if (k != i) {
            items[k] = *it;
        }
        k++;
    }
    return k;
}

/* While Redis fails (RateLimitOnError local): each plans=redis item with
 * the plan Redis last gave its key in this child, else the directive's
 * RATE.  Those whose plan is off go last, allowed and not decided; how
 * many are left to decide */
int rrl_plan_fallback(request_rec *r, rrl_item_t *items, int n)
{
    rrl_algo_plan_t pl;
    rrl_item_t off;
    int i, k;

    for (i = k = 0; i < n; i++) {
        rrl_item_t *it = &items[i];

        if (it->plan_key) {
            it->p = &it->limit->p;        /* whatever Redis half said */
            it->plan = RRL_PLAN_NONE;
            if (rrl_plan_seen && rrl_plan_recall(it, &pl)) {
                rrl_plan_apply(r, it, &pl);
            }
        }
        if (it->plan == RRL_PLAN_OFF) {
            it->allowed = 1;
            it->remaining = it->reset = it->retry = 0;
            it->spent = 0;
            continue;
        }
        if (k != i) {             /* the off ones between move up */
            off = items[k];
            items[k] = *it;
            *it = off;
        }
        k++;
    }
    return k;
}

/* A plan in Redis that does not parse: counted, and logged once a minute
 * per limit by all children together; never its value, nor the key's:
 * the plan key's SHA-1 finds it (docs/operations.md) */
static void rrl_plan_invalid(request_rec *r, const rrl_item_t *it)
{
    rrl_limit_stat_t *st = it->limit->stat;
    apr_uint32_t minute = (apr_uint32_t)(apr_time_sec(apr_time_now()) / 60);
    apr_uint32_t last;
    const char *vhost = rrl_limit_vhost(it->limit);

    if (!st) {
        return;
    }
    apr_atomic_inc64(&st->plan_errors);
    last = apr_atomic_read32(&st->plan_logged);
    if (last == minute || apr_atomic_cas32(&st->plan_logged, minute, last)
                          != last) {
        return;
    }
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, RRL_LOGNO(00060)
                  "RateLimit %s%s%s: the plan at plan key SHA-1 %.12s does "
                  "not parse or does not fit the limit (expected RATE, "
                  "RATE burst=N or off, with burst= only for gcra and "
                  "token-bucket and no cost above it); the directive's "
                  "RATE applies (plans of this limit that did not parse so "
                  "far: %" APR_UINT64_T_FMT "; one line a minute)",
                  it->limit->name,
                  *vhost ? " of virtual host " : "", vhost,
                  rrl_util_sha1_hex(r->pool, it->plan_key, it->plan_keylen),
                  apr_atomic_read64(&st->plan_errors));
}

/*
 * After a store decided the items: what Redis said of their plans goes
 * into this child's memory, a plan that does not parse is logged, and an
 * item whose plan is off, which the limit does not apply to, is left out
 * of the answer.  How many are left.
 */
int rrl_plan_settle(request_rec *r, rrl_item_t *items, int n,
                    rrl_source_e src)
{
    apr_time_t now = 0;
    int i, k, locked = 0;

    for (i = k = 0; i < n; i++) {
        rrl_item_t *it = &items[i];

        if (it->plan_key && src == RRL_BY_STORE && rrl_plan_seen) {
            if (!locked) {
                apr_thread_mutex_lock(rrl_plan_mutex);
                now = apr_time_now();
                locked = 1;
            }
            rrl_plan_remember(it, now);
        }
        if (it->plan == RRL_PLAN_INVALID) {
            rrl_plan_invalid(r, it);
        }
        if (rrl_plan_off(it)) {
            continue;
        }
        if (k != i) {
            items[k] = *it;
        }
        k++;
    }
    if (locked) {
        apr_thread_mutex_unlock(rrl_plan_mutex);
    }
    return k;
}
