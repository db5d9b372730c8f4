/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The decision: access, fixups and log hooks.
 */

#include "apr_atomic.h"
#include "apr_optional.h"
#include "apr_strings.h"

#include "http_core.h"
#include "http_request.h"
#include "mod_http2.h"

#include "rrl_private.h"
#include "rrl_decide.h"
#include "rrl_config.h"
#include "rrl_counters.h"
#include "rrl_deny.h"
#include "rrl_key.h"
#include "rrl_limit.h"
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
    apr_array_header_t *pending;  /* rrl_item_t: count= spends at log time */
    int replay;                   /* stream 1 of an h2c upgrade: decided */
} rrl_req_t;

/*
 * What an upgrading request decided, kept on its connection for the
 * request that replays it (below, "Upgrade: h2c")
 */
typedef struct {
    volatile apr_uint32_t taken;
    rrl_req_t rq;                 /* its state, pending items copied */
    apr_table_t *headers;         /* the headers it put out */
} rrl_upgrade_t;

/* The headers rrl_set_headers puts out */
static const char *const rrl_header_names[] = {
    RRL_HDR_LIMIT, RRL_HDR_REMAINING, RRL_HDR_RESET, RRL_HDR_POLICY,
    RRL_HDR_RATELIMIT, NULL
};

/* mod_http2's, when it is loaded; written in optional_fn_retrieve only */
static APR_OPTIONAL_FN_TYPE(http2_var_lookup) *rrl_h2_var;

/* RATELIMIT_RESULT's texts, by rrl_result_e */
static const char *const rrl_result_names[RRL_RES_MAX] = {
    [RRL_RES_NONE] = "",
#define RRL_RES_NAME(e, text, key, json, help) [RRL_RES_##e] = text,
    RRL_RESULTS(RRL_RES_NAME)
#undef RRL_RES_NAME
};

/*
 * RRL00007 and RRL00008, a line per decision at info, would be a line per
 * request of a flood: at most one a second per child, limit and kind,
 * each saying how many it stands for.  One gate per (name, scope) pair and
 * kind, made in child_init (per child).
 */
typedef struct {
    volatile apr_uint32_t second;     /* of the last line */
    volatile apr_uint32_t suppressed; /* since then */
} rrl_log_gate_t;

typedef enum { RRL_LOG_DENIED = 0, RRL_LOG_DRY_RUN, RRL_LOG_KINDS } rrl_log_e;

static rrl_log_gate_t *rrl_log_gates;       /* per child */
static int rrl_log_npairs;

void rrl_decide_child_init(apr_pool_t *pchild)
{
    const apr_array_header_t *pairs = rrl_limit_pairs();

    rrl_log_npairs = pairs ? pairs->nelts : 0;
    rrl_log_gates = apr_pcalloc(pchild, sizeof(*rrl_log_gates)
                                        * RRL_LOG_KINDS
                                        * (rrl_log_npairs ? rrl_log_npairs
                                                          : 1));
}

/* May this line be logged now?  *suppressed: how many were not since the
 * last one */
static int rrl_log_gate(const rrl_limit_t *l, rrl_log_e kind,
                        apr_uint32_t *suppressed)
{
    apr_uint32_t sec = (apr_uint32_t)apr_time_sec(apr_time_now()), last;
    rrl_log_gate_t *g;

    *suppressed = 0;
    if (!rrl_log_gates || l->pair < 0 || l->pair >= rrl_log_npairs) {
        return 1;
    }
    g = &rrl_log_gates[l->pair * RRL_LOG_KINDS + kind];
    last = apr_atomic_read32(&g->second);
    if (last != sec && apr_atomic_cas32(&g->second, sec, last) == last) {
        *suppressed = apr_atomic_xchg32(&g->suppressed, 0);
        return 1;
    }
    apr_atomic_inc32(&g->suppressed);
    return 0;
}

/* " (and N more ... since the last line)", or "" */
static const char *rrl_log_more(request_rec *r, apr_uint32_t suppressed,
                                const char *what)
{
    return suppressed ? apr_psprintf(r->pool, " (and %u more %s by this "
                                     "limit in this child since the last "
                                     "line)", suppressed, what) : "";
}

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
    apr_uint32_t more;
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
        if (APLOGrinfo(r)
            && rrl_log_gate(shown->limit, RRL_LOG_DRY_RUN, &more)) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RRL_LOGNO(00007)
                          "RateLimit %s would deny this request to %s "
                          "(dry-run)%s", shown->limit->name,
                          r->server->server_hostname,
                          rrl_log_more(r, more, "such requests"));
        }
        return DECLINED;
    }
    rq->result = src == RRL_BY_STORE ? RRL_RES_DENIED : RRL_RES_LOCAL_DENIED;
    rq->denied = 1;
    rq->pending = NULL;          /* a denied request spends nothing */
    rrl_set_env(r, rq, &rq->env_added);
    apr_table_setn(r->err_headers_out, "Retry-After",
                   rrl_util_i64(r->pool, retry > RRL_USEC_PER_SEC
                                    ? rrl_ceil_sec(retry) : 1));
    if (APLOGrinfo(r) && rrl_log_gate(shown->limit, RRL_LOG_DENIED, &more)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RRL_LOGNO(00008)
                      "RateLimit %s denies this request to %s, retry in %"
                      APR_INT64_T_FMT " ms%s", shown->limit->name,
                      r->server->server_hostname, (retry + 999) / 1000,
                      rrl_log_more(r, more, "denials"));
    }
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
    rq->pending = NULL;
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
 * "Upgrade: h2c".  mod_http2 switches protocols in the handler of the
 * HTTP/1.1 request, after every phase of it has run (and spent), then
 * replays that request as stream 1 of the new HTTP/2 connection: a request
 * of its own that runs every hook again, and the one whose response the
 * client gets.  One client request, one spend (SPEC 3): at the switch
 * (ap_switch_protocol runs this hook first), what the request decided is
 * kept on its connection; stream 1 of an HTTP/2 connection made from it
 * takes that over instead of deciding: headers, RATELIMIT_* and the
 * count= items, which spend by stream 1's final status.  The HTTP/1.1
 * request keeps its counters (its decision), stream 1 counts nothing.
 */
int rrl_decide_protocol_switch(conn_rec *c, request_rec *r, server_rec *s,
                               const char *protocol)
{
    rrl_req_t *rq = r ? ap_get_module_config(r->request_config,
                                             &redis_ratelimit_module)
                      : NULL;
    rrl_upgrade_t *up;
    int i;

    (void)s;
    (void)protocol;
    if (!rq || rq->result == RRL_RES_NONE || rq->replay) {
        return DECLINED;
    }
    /* the connection outlives this request (under event, stream 1 may
     * run after it is gone) */
    up = apr_pcalloc(c->pool, sizeof(*up));
    up->rq = *rq;
    up->rq.env_added = 0;
    up->rq.replay = 1;
    up->headers = apr_table_make(c->pool, 5);
    for (i = 0; rrl_header_names[i]; i++) {
        const char *v = apr_table_get(r->err_headers_out,
                                      rrl_header_names[i]);

        if (v) {
            apr_table_setn(up->headers, rrl_header_names[i],
                           apr_pstrdup(c->pool, v));
        }
    }
    if (rq->pending) {
        up->rq.pending = apr_array_copy(c->pool, rq->pending);
        for (i = 0; i < up->rq.pending->nelts; i++) {
            rrl_item_t *it = &APR_ARRAY_IDX(up->rq.pending, i, rrl_item_t);

            it->key = apr_pstrmemdup(c->pool, it->key, it->keylen);
            if (it->p != &it->limit->p) {
                it->p = apr_pmemdup(c->pool, it->p, sizeof(*it->p));
            }
        }
        rq->pending = NULL;       /* stream 1 spends them, by its status */
    }
    ap_set_module_config(c->conn_config, &redis_ratelimit_module, up);
    return DECLINED;
}

void rrl_decide_retrieve(void)
{
    rrl_h2_var = APR_RETRIEVE_OPTIONAL_FN(http2_var_lookup);
}

/* Is r the replay of an upgraded request?  Then its state is taken over
 * (once) */
static int rrl_take_upgrade(request_rec *r)
{
    conn_rec *c1 = r->connection->master;
    rrl_upgrade_t *up;
    rrl_req_t *rq;
    const char *id;
    int i;

    if (!c1 || !rrl_h2_var
        || !(up = ap_get_module_config(c1->conn_config,
                                       &redis_ratelimit_module))
        || apr_atomic_read32(&up->taken)) {
        return 0;
    }
    /* stream 1 of an upgraded connection is the replay; the client's own
     * streams have odd numbers from 3 */
    id = rrl_h2_var(r->pool, r->server, r->connection, r,
                    (char *)"H2_STREAM_ID");
    if (!id || strcmp(id, "1") != 0
        || apr_atomic_cas32(&up->taken, 1, 0) != 0) {
        return 0;
    }
    rq = rrl_req(r);
    *rq = up->rq;
    for (i = 0; rrl_header_names[i]; i++) {
        const char *v = apr_table_get(up->headers, rrl_header_names[i]);

        if (v) {
            apr_table_setn(r->err_headers_out, rrl_header_names[i], v);
        }
    }
    rrl_set_env(r, rq, &rq->env_added);
    return 1;
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
    if (r->connection->master) {
        rq = ap_get_module_config(r->request_config, &redis_ratelimit_module);
        if ((rq && rq->replay) || rrl_take_upgrade(r)) {
            return DECLINED;      /* decided as the upgrading request */
        }
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
        it->mode = l->nstatuses ? RRL_MODE_CHECK : RRL_MODE_SPEND;
        it->hashed = 0;
        if (it->mode == RRL_MODE_CHECK) {
            if (!rq->pending) {
                rq->pending = apr_array_make(r->pool, 2, sizeof(rrl_item_t));
            }
            APR_ARRAY_PUSH(rq->pending, rrl_item_t) = *it;
        }
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

/*
 * count= limits spend when the response is logged, and only on the final
 * statuses they name.  The RATELIMIT_* variables are also copied to the
 * final request of an internal redirect (ErrorDocument 429), where
 * mod_log_config reads them.
 */
int rrl_decide_log(request_rec *r)
{
    rrl_req_t *rq = ap_get_module_config(r->request_config,
                                         &redis_ratelimit_module);
    request_rec *last = r;
    rrl_item_t *items;
    int i, n = 0;

    if (!rq) {
        return DECLINED;
    }
    while (last->next) {
        last = last->next;
    }
    if (last != r && rq->result != RRL_RES_NONE) {
        rrl_set_env(last, rq, NULL);
    }
    if (rq->result != RRL_RES_NONE && !rq->replay) {
        if (rq->result != RRL_RES_EXEMPT) {
            rrl_counters_count(RRL_CTR_CHECKED);
        }
        rrl_counters_count_result(rq->result);
    }
    if (!rq->pending || rq->denied) {
        return DECLINED;
    }
    items = (rrl_item_t *)rq->pending->elts;
    for (i = 0; i < rq->pending->nelts; i++) {
        const rrl_limit_t *l = items[i].limit;
        int j;

        for (j = 0; j < l->nstatuses; j++) {
            if (l->statuses[j] == last->status) {
                items[n] = items[i];
                items[n].mode = RRL_MODE_FORCE;
                n++;
                break;
            }
        }
    }
    if (n) {
        const rrl_dir_conf_t *dc = ap_get_module_config(
            r->per_dir_config, &redis_ratelimit_module);
        const rrl_srv_conf_t *sc = ap_get_module_config(
            r->server->module_config, &redis_ratelimit_module);
        apr_int64_t now;
        rrl_source_e src;

        rrl_decide_items(r, sc, dc, items, n, &now, &src);
    }
    return DECLINED;
}
