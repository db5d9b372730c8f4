/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The deny cache: what Redis denied, answered in the child until then,
 * or for a second at most.
 */

#include "apr_strings.h"
#include "apr_thread_mutex.h"

#include "rrl_private.h"
#include "rrl_deny.h"
#include "rrl_local.h"

#define RRL_DENY_WAYS 4
#define RRL_DENY_BUCKETS 1024

/* SPEC 4: a denial is answered here for at most this long, so that an
 * operator who deletes a key in Redis (or raises its plan) is obeyed
 * within a second on every child; a flood still costs Redis one call per
 * key per second per child at most */
#define RRL_DENY_HOLD apr_time_from_sec(1)

typedef struct {
    apr_uint64_t h[2];
    apr_time_t until;             /* local clock: answered here until then */
    apr_time_t retry_until;       /* denied until then, as Redis said */
    apr_time_t reset_until;
    apr_int64_t remaining;
    apr_int64_t count, period;    /* a plan's (plans=), for the headers; 0:
                                   * the limit's own */
} rrl_deny_t;

static rrl_deny_t *rrl_deny;                /* per child */
static apr_thread_mutex_t *rrl_deny_mutex;

static rrl_deny_t *rrl_deny_bucket(const apr_uint64_t h[2])
{
    return &rrl_deny[(h[0] % RRL_DENY_BUCKETS) * RRL_DENY_WAYS];
}

/* Made in each child that sends limits to Redis; without it (no mutex),
 * every request asks Redis */
void rrl_deny_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv;

    rrl_deny = apr_pcalloc(pchild, sizeof(*rrl_deny) * RRL_DENY_WAYS
                                   * RRL_DENY_BUCKETS);
    rv = apr_thread_mutex_create(&rrl_deny_mutex, APR_THREAD_MUTEX_DEFAULT,
                                 pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, RRL_LOGNO(00022)
                     "cannot create this child's deny cache; its requests "
                     "all go to Redis (RateLimitDenyCache)");
        rrl_deny = NULL;
    }
}

int rrl_deny_ready(void)
{
    return rrl_deny != NULL;
}

/* Is a key of these items denied for now?  The first such item, its
 * outcome filled in from the cache (and the numbers of the plan it was
 * denied by, in p) */
rrl_item_t *rrl_deny_lookup(apr_pool_t *p, rrl_item_t *items, int n,
                            apr_time_t now)
{
    rrl_item_t *hit = NULL;
    apr_int64_t count = 0, period = 0;
    int i, j;

    apr_thread_mutex_lock(rrl_deny_mutex);
    for (i = 0; !hit && i < n; i++) {
        const apr_uint64_t *h = rrl_local_hash(&items[i]);
        rrl_deny_t *b = rrl_deny_bucket(h);

        for (j = 0; j < RRL_DENY_WAYS; j++) {
            if (b[j].until > now && b[j].h[0] == h[0]
                && b[j].h[1] == h[1]) {
                hit = &items[i];
                hit->allowed = 0;
                hit->remaining = b[j].remaining;
                hit->retry = b[j].retry_until - now;
                hit->reset = b[j].reset_until > now ? b[j].reset_until - now
                                                    : 0;
                count = b[j].count;
                period = b[j].period;
                break;
            }
        }
    }
    apr_thread_mutex_unlock(rrl_deny_mutex);
    if (hit && count) {
        rrl_params_t *rp = apr_pmemdup(p, hit->p, sizeof(*rp));

        rp->count = count;
        rp->period = period;
        hit->p = rp;
        hit->plan = RRL_PLAN_APPLIED;
    }
    return hit;
}

void rrl_deny_remember(rrl_item_t *it, apr_time_t now)
{
    const apr_uint64_t *h = rrl_local_hash(it);
    rrl_deny_t *b = rrl_deny_bucket(h), *slot = NULL;
    int j;

    apr_thread_mutex_lock(rrl_deny_mutex);
    for (j = 0; j < RRL_DENY_WAYS; j++) {
        if (b[j].h[0] == h[0] && b[j].h[1] == h[1]) {
            slot = &b[j];
            break;
        }
        if (!slot || b[j].until < slot->until) {
            slot = &b[j];           /* else the one that ends first */
        }
    }
    slot->h[0] = h[0];
    slot->h[1] = h[1];
    slot->until = now + (it->retry < RRL_DENY_HOLD ? it->retry
                                                   : RRL_DENY_HOLD);
    slot->retry_until = now + it->retry;
    slot->reset_until = now + it->reset;
    slot->remaining = it->remaining;
    slot->count = it->plan == RRL_PLAN_APPLIED ? it->p->count : 0;
    slot->period = it->p->period;
    apr_thread_mutex_unlock(rrl_deny_mutex);
}
