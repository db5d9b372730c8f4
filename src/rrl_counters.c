/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The counters of all children, in shared memory.
 */

#include "apr_atomic.h"
#include "apr_hash.h"
#include "apr_shm.h"
#include "apr_strings.h"

#include <string.h>

#include "rrl_private.h"
#include "rrl_counters.h"
#include "rrl_util.h"

typedef struct {
    apr_uint32_t magic;
    rrl_lock_t lock;              /* of the backends' last errors */
    apr_int64_t started;          /* counting since (us) */
    volatile apr_uint64_t counters[RRL_CTR_MAX];
    volatile apr_uint64_t lat_buckets[RRL_LAT_BUCKETS];
    volatile apr_uint64_t lat_sum, lat_count, lat_max;   /* us */
    rrl_shared_backend_t backends[RRL_MAX_BACKENDS + 1];  /* +1: overflow */
} rrl_status_t;

static rrl_status_t *rrl_status;             /* shared by all children */

/*
 * The limits' counters: shared segments made in post_config, sized to
 * the (name, virtual host) pairs of the configuration.  A pair keeps its
 * slot for the server's lifetime, so its counts carry on over graceful
 * restarts (children of the old generation still count into it); a
 * restart that brings new pairs adds a segment for them.  The list lives
 * in the process pool, like the status region.
 */
typedef struct rrl_stat_seg {
    struct rrl_stat_seg *next;
    int size, used;
    rrl_limit_stat_t *slots;      /* in shared memory */
} rrl_stat_seg_t;

#define RRL_STAT_SEG_MIN 32       /* slots of a segment at least */

const apr_int64_t rrl_counters_lat_bounds[] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000
};

const rrl_counter_info_t rrl_counters_info[RRL_CTR_MAX] = {
#define RRL_CTR_INFO(e, result, key, json, help) { result, key, json, help },
    RRL_COUNTERS(RRL_CTR_INFO)
#undef RRL_CTR_INFO
};

/* The status region: made once per server lifetime, kept over graceful
 * restarts like the store */
apr_status_t rrl_counters_create(server_rec *s)
{
    apr_pool_t *pglobal = s->process->pool;
    apr_shm_t *shm = NULL;
    apr_status_t rv;

    apr_pool_userdata_get((void **)&rrl_status, "rrl_status", pglobal);
    if (rrl_status) {
        return APR_SUCCESS;
    }
    if ((rv = apr_shm_create(&shm, sizeof(rrl_status_t), NULL, pglobal))
        != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00017)
                     "cannot create shared memory for the module's status");
        return rv;
    }
    rrl_status = apr_shm_baseaddr_get(shm);
    memset(rrl_status, 0, sizeof(*rrl_status));
    if ((rv = rrl_util_lock_init(&rrl_status->lock)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00010)
                     "cannot create the status page's lock");
        return rv;
    }
    rrl_status->magic = RRL_SHM_MAGIC;
    rrl_status->started = apr_time_now();
    apr_pool_userdata_set(rrl_status, "rrl_status", apr_pool_cleanup_null,
                          pglobal);
    return APR_SUCCESS;
}

/* The shared slot of a Redis URL (in the parent, before any child) */
rrl_shared_backend_t *rrl_counters_backend(const rrl_redis_url_t *u)
{
    apr_uint64_t id = rrl_util_fnv1a(u->url);
    int i;

    for (i = 0; i < RRL_MAX_BACKENDS; i++) {
        rrl_shared_backend_t *sb = &rrl_status->backends[i];

        if (sb->id == id || sb->id == 0) {
            if (sb->id == 0) {
                sb->id = id;
                sb->since = apr_time_now();
                apr_cpystrn(sb->masked, u->masked, sizeof(sb->masked));
            }
            return sb;
        }
    }
    apr_cpystrn(rrl_status->backends[RRL_MAX_BACKENDS].masked,
                "(more Redis URLs than the status page shows)",
                RRL_URL_LEN);
    return &rrl_status->backends[RRL_MAX_BACKENDS];
}

/* "vhost" NUL "name": a pair's identity */
static const char *rrl_pair_id(apr_pool_t *p, const char *name,
                               const char *vhost, apr_size_t *len)
{
    apr_size_t vl = strlen(vhost), nl = strlen(name);
    char *id = apr_palloc(p, vl + nl + 2);

    memcpy(id, vhost, vl + 1);
    memcpy(id + vl + 1, name, nl + 1);
    *len = vl + nl + 1;
    return id;
}

/*
 * The counters of each of the n pairs (names[i], vhosts[i]) into stats[i]:
 * the slot it had in an earlier generation, else a new one (in the
 * parent, before any child)
 */
apr_status_t rrl_counters_limits(server_rec *s, apr_pool_t *ptemp, int n,
                                 const char *const *names,
                                 const char *const *vhosts,
                                 rrl_limit_stat_t **stats)
{
    apr_pool_t *pglobal = s->process->pool;
    apr_hash_t *known = apr_hash_make(ptemp);
    rrl_stat_seg_t *head = NULL, *seg;
    apr_shm_t *shm = NULL;
    apr_status_t rv;
    apr_size_t len;
    int i, missing = 0;

    apr_pool_userdata_get((void **)&head, "rrl_limit_stats", pglobal);
    for (seg = head; seg; seg = seg->next) {
        for (i = 0; i < seg->used; i++) {
            const char *id = rrl_pair_id(ptemp, seg->slots[i].name,
                                         seg->slots[i].vhost, &len);

            apr_hash_set(known, id, len, &seg->slots[i]);
        }
    }
    for (i = 0; i < n; i++) {
        const char *id = rrl_pair_id(ptemp, names[i], vhosts[i], &len);

        stats[i] = apr_hash_get(known, id, len);
        missing += !stats[i];
    }
    if (missing > (head ? head->size - head->used : 0)) {
        seg = apr_pcalloc(pglobal, sizeof(*seg));
        seg->size = missing > RRL_STAT_SEG_MIN ? missing : RRL_STAT_SEG_MIN;
        rv = apr_shm_create(&shm, sizeof(rrl_limit_stat_t) * seg->size,
                            NULL, pglobal);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00024)
                         "cannot create shared memory for the counters of "
                         "%d limits", seg->size);
            return rv;
        }
        seg->slots = apr_shm_baseaddr_get(shm);
        memset(seg->slots, 0, sizeof(rrl_limit_stat_t) * seg->size);
        seg->next = head;
        head = seg;
        apr_pool_userdata_set(head, "rrl_limit_stats", apr_pool_cleanup_null,
                              pglobal);
    }
    for (i = 0; i < n; i++) {
        if (!stats[i]) {
            const char *id = rrl_pair_id(ptemp, names[i], vhosts[i], &len);

            if ((stats[i] = apr_hash_get(known, id, len)) != NULL) {
                continue;           /* named twice in the list */
            }
            stats[i] = &head->slots[head->used++];
            apr_cpystrn(stats[i]->name, names[i], sizeof(stats[i]->name));
            apr_cpystrn(stats[i]->vhost, vhosts[i], sizeof(stats[i]->vhost));
            apr_hash_set(known, id, len, stats[i]);
        }
    }
    return APR_SUCCESS;
}

void rrl_counters_count(rrl_counter_e c)
{
    apr_atomic_inc64(&rrl_status->counters[c]);
}

/* The counter of a RATELIMIT_RESULT */
void rrl_counters_count_result(rrl_result_e res)
{
    static const rrl_counter_e of[RRL_RES_MAX] = {
        [RRL_RES_NONE] = RRL_CTR_MAX,
#define RRL_CTR_OF(e, text, key, json, help) [RRL_RES_##e] = RRL_CTR_##e,
        RRL_RESULTS(RRL_CTR_OF)
#undef RRL_CTR_OF
    };

    if (of[res] != RRL_CTR_MAX) {
        rrl_counters_count(of[res]);
    }
}

void rrl_counters_add(rrl_counter_e c, apr_uint64_t n)
{
    apr_atomic_add64(&rrl_status->counters[c], n);
}

void rrl_counters_latency(apr_int64_t us)
{
    apr_uint64_t max;
    int b;

    for (b = 0; b < RRL_LAT_BUCKETS - 1 && us > rrl_counters_lat_bounds[b];
         b++)
        ;
    apr_atomic_inc64(&rrl_status->lat_buckets[b]);
    apr_atomic_add64(&rrl_status->lat_sum, (apr_uint64_t)us);
    apr_atomic_inc64(&rrl_status->lat_count);
    while ((max = apr_atomic_read64(&rrl_status->lat_max)) < (apr_uint64_t)us
           && apr_atomic_cas64(&rrl_status->lat_max, (apr_uint64_t)us, max)
              != max)
        ;
}

/* The last error, for the status page of every child */
void rrl_counters_error(rrl_shared_backend_t *sb, const char *err)
{
    if (rrl_util_lock(&rrl_status->lock) == APR_SUCCESS) {
        rrl_util_copy_words(sb->last_error, sizeof(sb->last_error), err,
                            strlen(err));
        sb->last_error_at = apr_time_now();
        rrl_util_unlock(&rrl_status->lock);
    }
}

/* The last error of a Redis, read under its lock */
const char *rrl_counters_last_error(apr_pool_t *p, rrl_shared_backend_t *sb,
                                    apr_time_t *at)
{
    const char *err = "";

    *at = 0;
    if (rrl_util_lock(&rrl_status->lock) == APR_SUCCESS) {
        err = apr_pstrdup(p, sb->last_error);
        *at = sb->last_error_at;
        rrl_util_unlock(&rrl_status->lock);
    }
    return err;
}

void rrl_counters_snapshot(rrl_snapshot_t *sn)
{
    int i;

    for (i = 0; i < RRL_CTR_MAX; i++) {
        sn->n[i] = apr_atomic_read64(&rrl_status->counters[i]);
    }
    sn->lat_count = 0;
    for (i = 0; i < RRL_LAT_BUCKETS; i++) {
        sn->lat[i] = apr_atomic_read64(&rrl_status->lat_buckets[i]);
        sn->lat_count += sn->lat[i];
    }
    sn->lat_sum = apr_atomic_read64(&rrl_status->lat_sum);
    sn->lat_max = apr_atomic_read64(&rrl_status->lat_max);
}

/* When counting started */
apr_time_t rrl_counters_started(void)
{
    return rrl_status->started;
}


/*
 * The requests in flight of concurrency limits, as the status page shows
 * them: a gauge per limit, and a table of holds, one per request holding
 * a slot, each with its deadline (the slot's lease, renewed with it).
 * The gauge goes up when a slot is taken and down when its hold ends:
 * released, or found past its deadline (its child was killed, or its
 * response outlived the lease without renewal: the store has freed the
 * slot too), by whoever looks for a free hold or by the status page
 * (rrl_counters_sweep).  Made once per server lifetime, in the process
 * pool, sized to the MPM's most threads; when every hold is taken, a slot
 * still counts, without a hold (a crash leaves it counted).
 */
typedef struct {
    volatile apr_uint64_t deadline;   /* us; 0: free */
    rrl_limit_stat_t *volatile st;    /* its limit's counters */
} rrl_hold_t;

typedef struct {
    apr_size_t n;
    rrl_hold_t *holds;                /* in shared memory */
} rrl_holds_t;

static rrl_holds_t *rrl_holds;

#define RRL_HOLD_PROBES 64

apr_status_t rrl_counters_holds_create(server_rec *s, apr_size_t n)
{
    apr_pool_t *pglobal = s->process->pool;
    apr_shm_t *shm = NULL;
    apr_status_t rv;

    apr_pool_userdata_get((void **)&rrl_holds, "rrl_holds", pglobal);
    if (rrl_holds) {
        return APR_SUCCESS;
    }
    if ((rv = apr_shm_create(&shm, sizeof(rrl_hold_t) * n, NULL, pglobal))
        != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00026)
                     "cannot create shared memory for %" APR_SIZE_T_FMT
                     " requests in flight", n);
        return rv;
    }
    rrl_holds = apr_pcalloc(pglobal, sizeof(*rrl_holds));
    rrl_holds->n = n;
    rrl_holds->holds = apr_shm_baseaddr_get(shm);
    memset(rrl_holds->holds, 0, sizeof(rrl_hold_t) * n);
    apr_pool_userdata_set(rrl_holds, "rrl_holds", apr_pool_cleanup_null,
                          pglobal);
    return APR_SUCCESS;
}

/* End hold h of deadline was, once: 1 if this call ended it */
static int rrl_hold_end(rrl_hold_t *h, apr_uint64_t was)
{
    rrl_limit_stat_t *st = h->st;

    if (!was || apr_atomic_cas64(&h->deadline, 0, was) != was) {
        return 0;
    }
    apr_atomic_dec32(&st->in_flight);
    return 1;
}

/* A slot of st taken until deadline: counted, with a hold when one is
 * free (its index, or RRL_HOLD_NONE) */
int rrl_counters_hold(rrl_limit_stat_t *st, apr_uint64_t ticket,
                      apr_time_t deadline)
{
    apr_uint32_t now_in = apr_atomic_inc32(&st->in_flight) + 1, peak;
    apr_time_t now = apr_time_now();
    apr_size_t i, k;

    while ((peak = apr_atomic_read32(&st->peak)) < now_in
           && apr_atomic_cas32(&st->peak, now_in, peak) != peak)
        ;
    for (k = 0; rrl_holds && k < RRL_HOLD_PROBES && k < rrl_holds->n; k++) {
        rrl_hold_t *h = &rrl_holds->holds[(ticket + k) % rrl_holds->n];
        apr_uint64_t d = apr_atomic_read64(&h->deadline);

        if (d && (apr_time_t)d <= now) {
            rrl_hold_end(h, d);        /* past its deadline: swept */
            d = apr_atomic_read64(&h->deadline);
        }
        if (!d && apr_atomic_cas64(&h->deadline, (apr_uint64_t)deadline, 0)
                  == 0) {
            h->st = st;
            i = (ticket + k) % rrl_holds->n;
            return (int)i;
        }
    }
    return RRL_HOLD_NONE;
}

/* Hold hold (deadline was) renewed until deadline: 0 when it had ended */
int rrl_counters_rehold(int hold, apr_time_t was, apr_time_t deadline)
{
    return hold >= 0
           && apr_atomic_cas64(&rrl_holds->holds[hold].deadline,
                               (apr_uint64_t)deadline, (apr_uint64_t)was)
              == (apr_uint64_t)was;
}

/* A slot of st released: the end of its hold, or of its count */
void rrl_counters_unhold(rrl_limit_stat_t *st, int hold, apr_time_t was)
{
    if (hold == RRL_HOLD_NONE) {
        apr_atomic_dec32(&st->in_flight);
    }
    else if (hold >= 0) {
        rrl_hold_end(&rrl_holds->holds[hold], (apr_uint64_t)was);
    }
}

/* Every hold past its deadline ended (the status page, before it shows
 * the gauges) */
void rrl_counters_sweep(apr_time_t now)
{
    apr_size_t i;

    for (i = 0; rrl_holds && i < rrl_holds->n; i++) {
        apr_uint64_t d = apr_atomic_read64(&rrl_holds->holds[i].deadline);

        if (d && (apr_time_t)d <= now) {
            rrl_hold_end(&rrl_holds->holds[i], d);
        }
    }
}
