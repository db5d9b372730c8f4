/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The decision: access, fixups and log hooks.
 */

#include "apr_atomic.h"
#include "apr_strings.h"

#include "http_core.h"
#include "http_request.h"

#include "rrl_private.h"
#include "rrl_decide.h"
#include "rrl_config.h"
#include "rrl_counters.h"
#include "rrl_deny.h"
#include "rrl_key.h"
#include "rrl_local.h"
#include "rrl_redis.h"
#include "rrl_util.h"

/* Per-request state, kept on the initial request */
typedef struct {
    int exempt_checked;
    int exempt;
    rrl_result_e result;
    int denied;
    const rrl_limit_t *shown;     /* limit whose headers are out */
    apr_int64_t shown_remaining;
    int env_added;                /* RATELIMIT_*: 1 RESULT, 2 all four */
    apr_array_header_t *reserved; /* rrl_reserved_t: what count= limits
                                   * spent, given back at log time unless
                                   * the final status is one they count */
} rrl_req_t;

/* A count= limit's spend, and the store it is in */
typedef struct {
    rrl_item_t it;
    int local;                    /* the local store, else the server's Redis */
} rrl_reserved_t;

/* RATELIMIT_RESULT's texts, by rrl_result_e */
static const char *const rrl_result_names[RRL_RES_MAX] = {
    [RRL_RES_NONE] = "",
#define RRL_RES_NAME(e, text, key, json, help) [RRL_RES_##e] = text,
    RRL_RESULTS(RRL_RES_NAME)
#undef RRL_RES_NAME
};

static rrl_req_t *rrl_req(request_rec *r)
{
    rrl_req_t *rq = ap_get_module_config(r->request_config,
                                         &redis_ratelimit_module);

    if (!rq) {
        rq = apr_pcalloc(r->pool, sizeof(*rq));
        ap_set_module_config(r->request_config, &redis_ratelimit_module, rq);
    }
    return rq;
}

static apr_int64_t rrl_ceil_sec(apr_int64_t us)
{
    return us > 0 ? (us + RRL_USEC_PER_SEC - 1) / RRL_USEC_PER_SEC : 0;
}

/* The headers of the limit shown: added when they are the first the
 * request shows (fresh), replacing those of an earlier phase otherwise */
static void rrl_set_headers(request_rec *r, int how, const rrl_item_t *it,
                            apr_int64_t now, int fresh)
{
    const rrl_limit_t *l = it->limit;
    apr_table_t *h = r->err_headers_out;
    void (*put)(apr_table_t *, const char *, const char *)
        = fresh ? apr_table_addn : apr_table_setn;
    /* a limit's own count is formatted once; RateLimitOnError local
     * instances=N decides with a scaled copy */
    int own = it->p == &l->p;

    if (how == RRL_HEADERS_LEGACY || how == RRL_HEADERS_BOTH) {
        put(h, RRL_HDR_LIMIT,
            own ? l->count_text : rrl_util_i64(r->pool, it->p->count));
        put(h, RRL_HDR_REMAINING, rrl_util_i64(r->pool, it->remaining));
        put(h, RRL_HDR_RESET,
            rrl_util_i64(r->pool, rrl_ceil_sec(now + it->reset)));
    }
    if (how == RRL_HEADERS_IETF || how == RRL_HEADERS_BOTH) {
        put(h, RRL_HDR_POLICY, own ? l->policy
            : apr_psprintf(r->pool, "\"%s\";q=%" APR_INT64_T_FMT ";w=%"
                           APR_INT64_T_FMT, l->name, it->p->count,
                           it->p->period / RRL_USEC_PER_SEC));
        put(h, RRL_HDR_RATELIMIT,
            apr_pstrcat(r->pool, l->ietf_prefix,
                        rrl_util_i64(r->pool, it->remaining), ";t=",
                        rrl_util_i64(r->pool, rrl_ceil_sec(it->reset)), NULL));
    }
}

/* RATELIMIT_* into the environment of r: added the first time (apr's
 * set would compare the names, which share their first letters, for
 * nothing), set the times after; *added says what is there (NULL: r is
 * not rq's request, set everything) */
static void rrl_set_env(request_rec *r, const rrl_req_t *rq, int *added)
{
    apr_table_t *env = r->subprocess_env;
    int have = added ? *added : 2;

    (have >= 1 ? apr_table_setn : apr_table_addn)(
        env, RRL_ENV_RESULT, rrl_result_names[rq->result]);
    if (rq->shown) {
        void (*put)(apr_table_t *, const char *, const char *)
            = have >= 2 ? apr_table_setn : apr_table_addn;

        put(env, RRL_ENV_NAME, rq->shown->name);
        put(env, RRL_ENV_LIMIT, rq->shown->count_text);
        put(env, RRL_ENV_REMAINING,
            rrl_util_i64(r->pool, rq->shown_remaining));
    }
    if (added) {
        *added = rq->shown ? 2 : 1;   /* a limit once shown stays shown */
    }
}

/*
 * Turn the items' outcomes into the answer: the headers of the limit with
 * the least left (of a denial: the denying limit that frees last), the
 * environment, and DECLINED or the denial status.
 */
static int rrl_answer(request_rec *r, const rrl_dir_conf_t *dc, rrl_req_t *rq,
                      rrl_item_t *items, int n, apr_int64_t now,
                      rrl_source_e src)
{
    const rrl_item_t *shown = NULL;
    apr_int64_t retry = 0;
    int i, allowed = 1;

    for (i = 0; i < n; i++) {
        if (!items[i].allowed) {
            allowed = 0;
            retry = items[i].retry > retry ? items[i].retry : retry;
        }
    }
    for (i = 0; i < n; i++) {
        rrl_limit_stat_t *st = items[i].limit->stat;

        if (!st) {
            continue;
        }
        if (!items[i].allowed) {
            apr_atomic_inc64(rrl_config_mode(dc) == RRL_DRY_RUN
                             ? &st->dry_run_denied : &st->denied);
        }
        else if (allowed) {
            apr_atomic_inc64(&st->allowed);
        }
    }
    for (i = 0; i < n; i++) {
        const rrl_item_t *it = &items[i];

        if (!allowed && it->allowed) {
            continue;
        }
        if (!shown
            || (allowed && it->remaining < shown->remaining)
            || (!allowed && (it->retry > shown->retry
                             || (it->retry == shown->retry
                                 && it->remaining < shown->remaining)))) {
            shown = it;
        }
    }

    /* an earlier phase may have shown a limit with less left */
    if (!allowed || !rq->shown || shown->remaining < rq->shown_remaining) {
        int fresh = !rq->shown;

        rq->shown = shown->limit;
        rq->shown_remaining = shown->remaining;
        if (rrl_config_headers(dc) != RRL_HEADERS_OFF) {
            rrl_set_headers(r, rrl_config_headers(dc), shown, now, fresh);
        }
    }

    if (allowed) {
        if (rq->result == RRL_RES_NONE || rq->result == RRL_RES_ALLOWED) {
            rq->result = src == RRL_BY_STORE ? RRL_RES_ALLOWED
                                             : RRL_RES_LOCAL_ALLOWED;
        }
        rrl_set_env(r, rq, &rq->env_added);
        return DECLINED;
    }
    if (rrl_config_mode(dc) == RRL_DRY_RUN) {
        rq->result = RRL_RES_DRY_RUN_DENIED;
        rrl_set_env(r, rq, &rq->env_added);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RRL_LOGNO(00007)
                      "RateLimit %s would deny this request (dry-run)",
                      shown->limit->name);
        return DECLINED;
    }
    rq->result = src == RRL_BY_STORE ? RRL_RES_DENIED : RRL_RES_LOCAL_DENIED;
    rq->denied = 1;              /* this decision spent nothing */
    rrl_set_env(r, rq, &rq->env_added);
    apr_table_setn(r->err_headers_out, "Retry-After",
                   rrl_util_i64(r->pool, retry > RRL_USEC_PER_SEC
                                    ? rrl_ceil_sec(retry) : 1));
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RRL_LOGNO(00008)
                  "RateLimit %s denies this request, retry in %"
                  APR_INT64_T_FMT " ms", shown->limit->name,
                  (retry + 999) / 1000);
    return rrl_config_status(dc);
}

/* While local: each limit divided among the instances (RateLimitOnError
 * local instances=N), so that together they stay near the global limit */
static void rrl_scale_items(request_rec *r, rrl_item_t *items, int n,
                            int instances)
{
    int i;

    for (i = 0; instances > 1 && i < n; i++) {
        rrl_params_t *p = apr_pmemdup(r->pool, items[i].p, sizeof(*p));
        apr_int64_t cost = items[i].cost;

        p->count = p->count / instances > cost ? p->count / instances : cost;
        p->interval = (p->period + p->count - 1) / p->count;
        if (p->algorithm == RRL_ALG_GCRA
            || p->algorithm == RRL_ALG_TOKEN_BUCKET) {
            p->burst = p->burst / instances > cost ? p->burst / instances
                                                   : cost;
        }
        else {
            p->burst = p->count;
        }
        items[i].p = p;
    }
}

/*
 * Decide items with the server's store: Redis when it has one, else the
 * local store.  When Redis fails, RateLimitOnError local decides in the
 * local store (*src says so).  0 when nothing decided them: allow and
 * deny answer in rrl_on_error().
 */
static int rrl_decide_items(request_rec *r, const rrl_srv_conf_t *sc,
                            const rrl_dir_conf_t *dc, rrl_item_t *items,
                            int n, apr_int64_t *now, rrl_source_e *src)
{
    *now = apr_time_now();
    *src = RRL_BY_STORE;
    if (!sc->backend) {
        return rrl_local_decide(r, items, n, *now) == APR_SUCCESS;
    }
    if (rrl_redis_decide(r, sc->backend, rrl_config_on_error_name(dc), items,
                         n, now) == RRL_REDIS_OK) {
        return 1;
    }
    if (rrl_config_on_error(dc) != RRL_ONERR_LOCAL) {
        return 0;
    }
    *now = apr_time_now();
    *src = RRL_BY_LOCAL_FALLBACK;
    rrl_scale_items(r, items, n, rrl_config_on_error_instances(dc));
    return rrl_local_decide(r, items, n, *now) == APR_SUCCESS;
}

/* RateLimitOnError allow or deny: the answer when no store could decide */
static int rrl_on_error(request_rec *r, const rrl_dir_conf_t *dc,
                        rrl_req_t *rq)
{
    if (rrl_config_on_error(dc) != RRL_ONERR_DENY) {
        if (rq->result != RRL_RES_DRY_RUN_DENIED) {
            rq->result = RRL_RES_FALLBACK_ALLOWED;
        }
        rrl_set_env(r, rq, &rq->env_added);
        return DECLINED;
    }
    if (rrl_config_mode(dc) == RRL_DRY_RUN) {
        rq->result = RRL_RES_DRY_RUN_DENIED;
        rrl_set_env(r, rq, &rq->env_added);
        return DECLINED;
    }
    rq->result = RRL_RES_FALLBACK_DENIED;
    rq->denied = 1;
    rrl_set_env(r, rq, &rq->env_added);
    apr_table_setn(r->err_headers_out, "Retry-After", "1");
    return rrl_config_status(dc);
}

/* The status page is limited only by limits written in its own section */
static int rrl_is_status_request(request_rec *r)
{
    core_dir_config *cd = ap_get_core_module_config(r->per_dir_config);
    const char *h = r->handler, *err = NULL;

    if (cd->expr_handler) {
        h = ap_expr_str_exec(r, cd->expr_handler, &err);
    }
    return h && !err && strcmp(h, RRL_STATUS_HANDLER) == 0;
}

/*
 * count= limits reserve at check time what the request would spend (they
 * spend it as any limit does), so that however many requests are in
 * flight at once no more of them can end with a counted status than the
 * limit has; what was spent is given back at log time (rrl_decide_log)
 * unless the final status counts.  A spend never given back (a child
 * killed) expires with the state.
 */
static void rrl_reserve(request_rec *r, rrl_req_t *rq, const rrl_item_t *items,
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

static int rrl_decide_phase(request_rec *r, rrl_phase_e phase)
{
    const rrl_dir_conf_t *dc;
    const rrl_srv_conf_t *sc;
    rrl_req_t *rq;
    rrl_item_t *items;
    const char *prefix;
    const apr_array_header_t *limits;
    int deny_cache, tag;
    apr_int64_t now;
    rrl_source_e src;
    int i, n = 0, status;

    if (!ap_is_initial_req(r)) {
        return DECLINED;
    }
    dc = ap_get_module_config(r->per_dir_config, &redis_ratelimit_module);
    limits = dc->limits;
    if (!limits || !limits->nelts) {
        return DECLINED;
    }
    if ((status = rrl_is_status_request(r)) != 0) {
        for (i = 0; i < limits->nelts; i++) {
            if (APR_ARRAY_IDX(limits, i, rrl_limit_t *)->for_status) {
                break;
            }
        }
        if (i == limits->nelts) {
            return DECLINED;      /* neither limited nor counted */
        }
    }
    rq = rrl_req(r);
    if (!rq->exempt_checked) {
        rq->exempt_checked = 1;
        if (rrl_config_is_exempt(r, dc)) {
            rq->exempt = 1;
            rq->result = RRL_RES_EXEMPT;
            rrl_set_env(r, rq, &rq->env_added);
        }
    }
    if (rq->exempt || rq->denied) {
        return DECLINED;
    }

    sc = ap_get_module_config(r->server->module_config,
                              &redis_ratelimit_module);
    prefix = rrl_config_prefix(sc);
    tag = sc->backend && sc->backend->u->kind == RRL_REDIS_CLUSTER;
    items = apr_palloc(r->pool, sizeof(*items) * limits->nelts);
    for (i = 0; i < limits->nelts; i++) {
        const rrl_limit_t *l = APR_ARRAY_IDX(limits, i, rrl_limit_t *);
        rrl_item_t *it = &items[n];

        if (l->phase != phase || (status && !l->for_status)) {
            continue;
        }
        it->key = rrl_key_build(r, l, prefix, tag, &it->keylen);
        if (!it->key) {
            continue;                /* an empty key is not counted */
        }
        it->limit = l;
        it->p = &l->p;
        it->cost = l->cost;
        it->mode = RRL_MODE_SPEND;   /* count= too: a reservation */
        it->spent = 0;
        it->hashed = 0;
        n++;
    }
    if (!n) {
        return DECLINED;
    }

    /* a key Redis denied until later is answered here, without Redis */
    deny_cache = sc->backend && rrl_config_deny_cache(sc) && rrl_deny_ready();
    if (deny_cache) {
        rrl_item_t *hit;

        now = apr_time_now();
        if ((hit = rrl_deny_lookup(items, n, now)) != NULL) {
            rrl_counters_count(RRL_CTR_DENY_CACHE_HITS);
            ap_log_rerror(APLOG_MARK, APLOG_TRACE2, 0, r, "RateLimit %s: "
                          "denied by the deny cache", hit->limit->name);
            return rrl_answer(r, dc, rq, hit, 1, now, RRL_BY_STORE);
        }
    }

    if (!rrl_decide_items(r, sc, dc, items, n, &now, &src)) {
        return rrl_on_error(r, dc, rq);
    }
    rrl_reserve(r, rq, items, n, !sc->backend || src != RRL_BY_STORE);
    if (deny_cache && src == RRL_BY_STORE
        && rrl_config_mode(dc) == RRL_ENFORCE) {
        apr_time_t local = apr_time_now();

        for (i = 0; i < n; i++) {
            if (!items[i].allowed && items[i].retry > 0) {
                rrl_deny_remember(&items[i], local);
            }
        }
    }
    return rrl_answer(r, dc, rq, items, n, now, src);
}

int rrl_decide_access(request_rec *r)
{
    return rrl_decide_phase(r, RRL_PHASE_ACCESS);
}

int rrl_decide_fixups(request_rec *r)
{
    return rrl_decide_phase(r, RRL_PHASE_AUTH);
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
 * fails, the reservation expires with the state) or the local store.  The
 * RATELIMIT_* variables are also copied to the final request of an
 * internal redirect (ErrorDocument 429), where mod_log_config reads them.
 */
int rrl_decide_log(request_rec *r)
{
    rrl_req_t *rq = ap_get_module_config(r->request_config,
                                         &redis_ratelimit_module);
    request_rec *last = r;
    rrl_reserved_t *rs;
    rrl_item_t *items;
    int i, local, n;

    if (!rq) {
        return DECLINED;
    }
    while (last->next) {
        last = last->next;
    }
    if (last != r && rq->result != RRL_RES_NONE) {
        rrl_set_env(last, rq, NULL);
    }
    if (rq->result != RRL_RES_NONE) {
        if (rq->result != RRL_RES_EXEMPT) {
            rrl_counters_count(RRL_CTR_CHECKED);
        }
        rrl_counters_count_result(rq->result);
    }
    if (!rq->reserved) {
        return DECLINED;
    }
    rs = (rrl_reserved_t *)rq->reserved->elts;
    items = apr_palloc(r->pool, sizeof(*items) * rq->reserved->nelts);
    for (local = 0; local < 2; local++) {
        for (i = n = 0; i < rq->reserved->nelts; i++) {
            if (rs[i].local == local
                && !rrl_counts(rs[i].it.limit, last->status)) {
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
    return DECLINED;
}
