/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The local store: a bounded table in shared memory.
 */

#include "apr_atomic.h"
#include "apr_general.h"
#include "apr_shm.h"

#include <string.h>

#include "rrl_private.h"
#include "rrl_local.h"
#include "rrl_algo.h"
#include "rrl_config.h"
#include "rrl_limit.h"
#include "rrl_util.h"

/* 8-way buckets of fixed slots.  A slot holds the state of one key.  When
 * a bucket is full, what costs least to forget gives way (rrl_local_slot) */
#define RRL_WAYS 8

typedef struct {
    apr_uint64_t h[2];            /* keyed hash of the store key */
    apr_int64_t expires;          /* us since the epoch; 0: free */
    apr_int64_t v[3];             /* algorithm state */
    apr_int32_t alg;              /* of v: the rrl_alg_e that wrote it */
    apr_uint32_t denied;          /* s since the epoch: its key is denied
                                   * until then, so it is evicted last */
} rrl_slot_t;

/* Bucket b is guarded by lock b % RRL_STRIPES: 32 threads of two children
 * deciding for different keys seldom meet */
#define RRL_STRIPES 256

typedef struct {
    apr_uint32_t magic;
    apr_uint32_t nbuckets;
    apr_uint64_t evictions;       /* slots taken from another key's entry */
    apr_uint64_t live_evictions;  /* of those, entries that still mattered */
    rrl_lock_t locks[RRL_STRIPES];
    rrl_slot_t slots[1];
} rrl_table_t;

/* Lives in the process pool so that the store survives graceful restarts;
 * table is NULL while no limit can use the store (rrl_local_needed) */
typedef struct {
    apr_shm_t *shm;
    apr_size_t size;
    rrl_table_t *table;
    unsigned char salt[16];       /* of the keys' hashes, for good */
} rrl_store_t;

/* Written in pre_config, while parsing and in post_config/child_init only */
static rrl_store_t *rrl_store;

/* An item's key hashed, once per request: the local store's and the deny
 * cache's identity of the key */
const apr_uint64_t *rrl_local_hash(rrl_item_t *it)
{
    if (!it->hashed) {
        rrl_util_siphash128(rrl_store->salt, it->key, it->keylen, it->h);
        it->hashed = 1;
    }
    return it->h;
}

/* The bucket of a key's hash */
static apr_size_t rrl_bucket(const apr_uint64_t h[2])
{
    return (apr_size_t)(h[0] % rrl_store->table->nbuckets);
}

/* How much forgetting slot s costs (the least gives way): nothing when
 * its state has expired (its key is back at its full allowance), then the
 * sooner it would expire the less; a key denied now costs most, since
 * forgetting it lets a client that is over its limit back in */
static int rrl_slot_costs_more(const rrl_slot_t *s, const rrl_slot_t *than,
                               apr_int64_t now)
{
    apr_uint32_t sec = (apr_uint32_t)apr_time_sec(now);
    int sd = s->denied > sec, td = than->denied > sec;

    return sd != td ? sd > td : s->expires > than->expires;
}

/* The live slot of h, or NULL; with claim, a slot to store h in */
static rrl_slot_t *rrl_local_slot(const apr_uint64_t h[2], apr_int64_t now,
                                  int claim)
{
    rrl_table_t *t = rrl_store->table;
    rrl_slot_t *b = &t->slots[rrl_bucket(h) * RRL_WAYS];
    rrl_slot_t *victim = NULL;
    int i;

    for (i = 0; i < RRL_WAYS; i++) {
        if (b[i].expires > now && b[i].h[0] == h[0] && b[i].h[1] == h[1]) {
            return &b[i];
        }
    }
    if (!claim) {
        return NULL;
    }
    for (i = 0; i < RRL_WAYS && (!victim || victim->expires > now); i++) {
        if (b[i].expires <= now || !victim
            || rrl_slot_costs_more(victim, &b[i], now)) {
            victim = &b[i];
        }
    }
    if (victim->expires && (victim->h[0] != h[0] || victim->h[1] != h[1])) {
        apr_atomic_inc64(&t->evictions);
        if (victim->expires > now) {
            apr_atomic_inc64(&t->live_evictions);
        }
    }
    return victim;
}

/* The stripes of the items' buckets, each once, in ascending order (the
 * order every taker follows, so that none waits in a circle) */
static int rrl_local_stripes(const apr_uint64_t *const *h, int n,
                             unsigned *stripes)
{
    int i, j, k, m = 0;

    for (i = 0; i < n; i++) {
        unsigned s = (unsigned)(rrl_bucket(h[i]) % RRL_STRIPES);

        for (j = 0; j < m && stripes[j] < s; j++)
            ;
        if (j < m && stripes[j] == s) {
            continue;
        }
        for (k = m++; k > j; k--) {
            stripes[k] = stripes[k - 1];
        }
        stripes[j] = s;
    }
    return m;
}

/* Decide every item in one critical section: check all, then spend all */
apr_status_t rrl_local_decide(request_rec *r, rrl_item_t *items, int n,
                              apr_int64_t now)
{
    const apr_uint64_t *hs[8], **h = n <= 8 ? hs
                                    : apr_palloc(r->pool, sizeof(*h) * n);
    rrl_outcome_t os[8], *o = n <= 8 ? os
                              : apr_palloc(r->pool, sizeof(*o) * n);
    unsigned ss[8], *stripes = n <= 8 ? ss
                               : apr_palloc(r->pool, sizeof(*stripes) * n);
    rrl_lock_t *locks;
    apr_status_t rv;
    int i, m, all = 1;

    if (!rrl_store->table) {
        return APR_ENOSHMAVAIL;      /* none made: no limit can use it */
    }
    locks = rrl_store->table->locks;

    for (i = 0; i < n; i++) {
        h[i] = rrl_local_hash(&items[i]);
    }
    m = rrl_local_stripes(h, n, stripes);
    for (i = 0; i < m; i++) {
        if ((rv = rrl_util_lock(&locks[stripes[i]])) != APR_SUCCESS) {
            while (i-- > 0) {
                rrl_util_unlock(&locks[stripes[i]]);
            }
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, RRL_LOGNO(00002)
                          "cannot lock the local store; the request is "
                          "allowed");
            return rv;
        }
    }
    for (i = 0; i < n; i++) {
        rrl_slot_t *s = rrl_local_slot(h[i], now, 0);

        rrl_algo_decide(items[i].p, items[i].cost, items[i].mode,
                        items[i].until, s ? s->v : NULL,
                        s ? s->alg : RRL_ALG_NONE, now, &o[i]);
        all = all && o[i].allowed;
        if (s && o[i].cut) {          /* plans=: owes no more than this */
            s->v[0] = o[i].cut_to;
            s->expires = now + o[i].cut_ttl;
        }
        if (s && !o[i].allowed) {
            s->denied = (apr_uint32_t)apr_time_sec(now + o[i].retry
                                                   + RRL_USEC_PER_SEC - 1);
        }
    }
    for (i = 0; all && i < n; i++) {
        rrl_slot_t *s;

        if (!o[i].write) {
            continue;
        }
        s = rrl_local_slot(h[i], now, 1);
        if (o[i].ttl > 0) {
            s->h[0] = h[i][0];
            s->h[1] = h[i][1];
            memcpy(s->v, o[i].next, sizeof(s->v));
            s->alg = (apr_int32_t)items[i].p->algorithm;
            s->denied = 0;
            s->expires = now + o[i].ttl;
        }
        else {
            s->expires = 0;
        }
    }
    for (i = m - 1; i >= 0; i--) {
        rrl_util_unlock(&locks[stripes[i]]);
    }

    for (i = 0; i < n; i++) {
        items[i].allowed = o[i].allowed;
        items[i].remaining = o[i].remaining;
        items[i].reset = o[i].reset;
        items[i].retry = o[i].retry;
        items[i].spent = all && items[i].mode == RRL_MODE_SPEND;
        if (items[i].spent) {
            items[i].until = now + o[i].reset;
        }
    }
    return APR_SUCCESS;
}

/*
 * Can a limit be decided in the local store?  A limit applies to the
 * requests of the server it is defined in, and one of the main server to
 * every virtual host's too; the local store decides for it where its
 * server has no Redis, or while Redis fails when RateLimitOnError local
 * may stand (the default, or written anywhere).
 */
int rrl_local_needed(server_rec *s)
{
    const apr_array_header_t *all = rrl_limit_all();
    server_rec *vs;
    int i, everywhere = 0;

    for (i = 0; all && i < all->nelts; i++) {
        everywhere |= APR_ARRAY_IDX(all, i, rrl_limit_t *)->server == s;
    }
    for (vs = s; vs; vs = vs->next) {
        const rrl_srv_conf_t *sc = ap_get_module_config(
            vs->module_config, &redis_ratelimit_module);
        const rrl_dir_conf_t *dc = ap_get_module_config(
            vs->lookup_defaults, &redis_ratelimit_module);
        int limited = everywhere;

        for (i = 0; !limited && all && i < all->nelts; i++) {
            limited = APR_ARRAY_IDX(all, i, rrl_limit_t *)->server == vs;
        }
        if (limited && (!sc->redis || sc->redis == &rrl_url_off || !dc
                        || rrl_config_on_error(dc) == RRL_ONERR_LOCAL
                        || rrl_config_local_named())) {
            return 1;
        }
    }
    return 0;
}

/*
 * The store of this generation: want bytes of shared memory when a limit
 * can use it (needed), else none, so that a server whose limits are all in
 * Redis without the local fallback holds no idle megabytes.  An earlier
 * generation's store of the same size is kept (limits carry on over a
 * graceful restart); one no longer wanted is given back (the children of
 * that generation keep their own mapping until they exit).
 */
apr_status_t rrl_local_post_config(server_rec *s, apr_size_t want,
                                   int needed)
{
    apr_pool_t *pglobal = s->process->pool;
    rrl_store_t *st = NULL;
    rrl_table_t *t;
    apr_status_t rv;
    apr_size_t nbuckets;
    int i;

    apr_pool_userdata_get((void **)&st, "rrl_store", pglobal);
    if (!st) {
        st = apr_pcalloc(pglobal, sizeof(*st));
        if ((rv = apr_generate_random_bytes(st->salt, sizeof(st->salt)))
            != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00005)
                         "cannot seed the local store's hash");
            return rv;
        }
        apr_pool_userdata_set(st, "rrl_store", apr_pool_cleanup_null,
                              pglobal);
    }
    rrl_store = st;
    if (st->shm && (!needed || st->size != want)) {
        apr_shm_destroy(st->shm);
        st->shm = NULL;
        st->table = NULL;
        st->size = 0;
    }
    if (!needed || st->shm) {
        return APR_SUCCESS;
    }
    rv = apr_shm_create(&st->shm, want, NULL, pglobal);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00003)
                     "cannot create %" APR_SIZE_T_FMT " bytes of shared "
                     "memory for the local store (RateLimitLocalSize)", want);
        st->shm = NULL;
        return rv;
    }
    t = apr_shm_baseaddr_get(st->shm);
    memset(t, 0, want);
    for (i = 0; i < RRL_STRIPES; i++) {
        if ((rv = rrl_util_lock_init(&t->locks[i])) != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00004)
                         "cannot create the local store's locks");
            return rv;
        }
    }
    nbuckets = (want - APR_OFFSETOF(rrl_table_t, slots))
               / (sizeof(rrl_slot_t) * RRL_WAYS);
    t->nbuckets = (apr_uint32_t)nbuckets;
    t->magic = RRL_SHM_MAGIC;
    st->size = want;
    st->table = t;
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, RRL_LOGNO(00006)
                 "local store: %" APR_SIZE_T_FMT " bytes, %u keys",
                 want, (unsigned)(nbuckets * RRL_WAYS));
    return APR_SUCCESS;
}

/* Forget the state of a store key (the status page's unblock): 1 when
 * it had some, 0 when not, -1 when the store could not be locked */
int rrl_local_forget(const char *key, apr_size_t len)
{
    rrl_item_t it;
    const apr_uint64_t *h;
    rrl_lock_t *lock;
    rrl_slot_t *slot;

    if (!rrl_store) {
        return 0;                 /* no local store: nothing kept */
    }
    memset(&it, 0, sizeof(it));
    it.key = key;
    it.keylen = len;
    h = rrl_local_hash(&it);
    lock = &rrl_store->table->locks[rrl_bucket(h) % RRL_STRIPES];
    if (rrl_util_lock(lock) != APR_SUCCESS) {
        return -1;
    }
    if ((slot = rrl_local_slot(h, apr_time_now(), 0)) != NULL) {
        slot->expires = 0;
    }
    rrl_util_unlock(lock);
    return slot != NULL;
}

/* For the status page; all 0 while there is no store.  The keys in use
 * are counted by a look at every slot, without locks: a moment's view */
void rrl_local_stats(rrl_local_stats_t *sn)
{
    const rrl_table_t *t = rrl_store ? rrl_store->table : NULL;
    apr_int64_t now = apr_time_now();
    apr_size_t i, n;

    memset(sn, 0, sizeof(*sn));
    if (!t) {
        return;
    }
    n = (apr_size_t)t->nbuckets * RRL_WAYS;
    sn->allocated = 1;
    sn->bytes = rrl_store->size;
    sn->capacity = n;
    for (i = 0; i < n; i++) {
        sn->in_use += t->slots[i].expires > now;
    }
    sn->evictions = apr_atomic_read64((volatile apr_uint64_t *)
                                      &t->evictions);
    sn->live_evictions = apr_atomic_read64((volatile apr_uint64_t *)
                                           &t->live_evictions);
}
