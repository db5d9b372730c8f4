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
#include "rrl_answer.h"
#include "rrl_config.h"
#include "rrl_counters.h"
#include "rrl_deny.h"
#include "rrl_key.h"
#include "rrl_limit.h"
#include "rrl_local.h"
#include "rrl_plan.h"
#include "rrl_redis.h"
#include "rrl_reserve.h"
#include "rrl_util.h"


/*
 * What an upgrading request decided, kept on its connection for the
 * request that replays it (below, "Upgrade: h2c")
 */
typedef struct {
    volatile apr_uint32_t taken;
    rrl_req_t rq;                 /* its state, reservations copied */
    apr_table_t *headers;         /* the headers it put out */
} rrl_upgrade_t;

/* The headers rrl_set_headers puts out */
static const char *const rrl_header_names[] = {
    RRL_HDR_LIMIT, RRL_HDR_REMAINING, RRL_HDR_RESET, RRL_HDR_POLICY,
    RRL_HDR_RATELIMIT, NULL
};

/* mod_http2's, when it is loaded; written in optional_fn_retrieve only */
static APR_OPTIONAL_FN_TYPE(http2_var_lookup) *rrl_h2_var;



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
        if (p->algorithm != RRL_ALG_CONCURRENCY) {
            p->interval = (p->period + p->count - 1) / p->count;
        }                            /* a concurrency limit's: its epoch */
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
 * deny answer in rrl_answer_on_error().
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
    n = rrl_plan_fallback(r, items, n);      /* the last plans Redis gave */
    rrl_scale_items(r, items, n, rrl_config_on_error_instances(dc));
    return rrl_local_decide(r, items, n, *now) == APR_SUCCESS;
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
 * count= reservations, given back or kept by stream 1's final status.  The HTTP/1.1
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
    if (rq->reserved) {
        up->rq.reserved = rrl_reserve_copy(c->pool, rq->reserved);
        rq->reserved = NULL;      /* stream 1 gives them back, or not, by
                                   * its final status */
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
    rq = rrl_answer_state(r);
    *rq = up->rq;
    rrl_reserve_take_over(r, rq);
    for (i = 0; rrl_header_names[i]; i++) {
        const char *v = apr_table_get(up->headers, rrl_header_names[i]);

        if (v) {
            apr_table_setn(r->err_headers_out, rrl_header_names[i], v);
        }
    }
    rrl_answer_env(r, rq, &rq->env_added);
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
    rq = rrl_answer_state(r);
    if (!rq->exempt_checked) {
        rq->exempt_checked = 1;
        if (rrl_config_is_exempt(r, dc)) {
            rq->exempt = 1;
            rq->result = RRL_RES_EXEMPT;
            rrl_answer_env(r, rq, &rq->env_added);
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
        it->ticket = l->p.algorithm == RRL_ALG_CONCURRENCY
                     ? rrl_reserve_ticket() : 0;
        n++;
    }
    n = rrl_plan_items(r, items, n, prefix, tag, sc->backend != NULL);
    if (!n) {
        return DECLINED;
    }

    /* a key Redis denied until later is answered here, without Redis */
    deny_cache = sc->backend && rrl_config_deny_cache(sc) && rrl_deny_ready();
    if (deny_cache) {
        rrl_item_t *hit;

        now = apr_time_now();
        if ((hit = rrl_deny_lookup(r->pool, items, n, now)) != NULL) {
            rrl_counters_count(RRL_CTR_DENY_CACHE_HITS);
            ap_log_rerror(APLOG_MARK, APLOG_TRACE2, 0, r, "RateLimit %s: "
                          "denied by the deny cache", hit->limit->name);
            return rrl_answer_items(r, dc, rq, hit, 1, now, RRL_BY_STORE);
        }
    }

    if (!rrl_decide_items(r, sc, dc, items, n, &now, &src)) {
        return rrl_answer_on_error(r, dc, rq);
    }
    if (!(n = rrl_plan_settle(r, items, n, src))) {
        return DECLINED;          /* every plan said off */
    }
    rrl_reserve_add(r, rq, items, n, !sc->backend || src != RRL_BY_STORE);
    if (deny_cache && src == RRL_BY_STORE
        && rrl_config_mode(dc) == RRL_ENFORCE) {
        apr_time_t local = apr_time_now();

        for (i = 0; i < n; i++) {
            /* a concurrency slot may be free at any moment */
            if (!items[i].allowed && items[i].retry > 0
                && items[i].p->algorithm != RRL_ALG_CONCURRENCY) {
                rrl_deny_remember(&items[i], local);
            }
        }
    }
    return rrl_answer_items(r, dc, rq, items, n, now, src);
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
 * At log time: what count= limits reserved is settled by the final status
 * (rrl_reserve_settle).  The RATELIMIT_* variables are also copied to the
 * final request of an internal redirect (ErrorDocument 429), where
 * mod_log_config reads them.
 */
int rrl_decide_log(request_rec *r)
{
    rrl_req_t *rq = ap_get_module_config(r->request_config,
                                         &redis_ratelimit_module);
    request_rec *last = r;

    if (!rq) {
        return DECLINED;
    }
    while (last->next) {
        last = last->next;
    }
    if (last != r && rq->result != RRL_RES_NONE) {
        rrl_answer_env(last, rq, NULL);
    }
    if (rq->result != RRL_RES_NONE && !rq->replay) {
        if (rq->result != RRL_RES_EXEMPT) {
            rrl_counters_count(RRL_CTR_CHECKED);
        }
        rrl_counters_count_result(rq->result);
    }
    if (rq->reserved) {
        rrl_reserve_settle(r, rq, last->status);
    }
    return DECLINED;
}
