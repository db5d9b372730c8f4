/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The answer of a decision: headers, environment, status.
 */

#include "apr_atomic.h"
#include "apr_strings.h"

#include "rrl_private.h"
#include "rrl_answer.h"
#include "rrl_counters.h"
#include "rrl_limit.h"
#include "rrl_util.h"

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

void rrl_answer_child_init(apr_pool_t *pchild)
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

rrl_req_t *rrl_answer_state(request_rec *r)
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
void rrl_answer_env(request_rec *r, const rrl_req_t *rq, int *added)
{
    apr_table_t *env = r->subprocess_env;
    int have = added ? *added : 2;

    (have >= 1 ? apr_table_setn : apr_table_addn)(
        env, RRL_ENV_RESULT, rrl_result_names[rq->result]);
    if (rq->shown) {
        void (*put)(apr_table_t *, const char *, const char *)
            = have >= 2 ? apr_table_setn : apr_table_addn;

        put(env, RRL_ENV_NAME, rq->shown->name);
        put(env, RRL_ENV_LIMIT, rq->shown_count == rq->shown->p.count
                                ? rq->shown->count_text
                                : rrl_util_i64(r->pool, rq->shown_count));
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
int rrl_answer_items(request_rec *r, const rrl_dir_conf_t *dc, rrl_req_t *rq,
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
        if (items[i].plan == RRL_PLAN_APPLIED) {
            apr_atomic_inc64(&st->plan_decisions);
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

        /* allowed: the headers of a rate; a concurrency limit has none
         * (what is left of it changes at any moment) */
        if (allowed ? it->p->algorithm == RRL_ALG_CONCURRENCY
                    : it->allowed) {
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

    /* an earlier phase may have shown a limit with less left; a denial
     * by a concurrency limit names it, with no rate's headers */
    if (shown && (!allowed || !rq->shown
                  || shown->remaining < rq->shown_remaining)) {
        int fresh = !rq->shown;

        rq->shown = shown->limit;
        rq->shown_count = shown->plan == RRL_PLAN_APPLIED
                          ? shown->p->count : shown->limit->p.count;
        rq->shown_remaining = shown->remaining;
        if (rrl_config_headers(dc) != RRL_HEADERS_OFF
            && shown->p->algorithm != RRL_ALG_CONCURRENCY) {
            rrl_set_headers(r, rrl_config_headers(dc), shown, now, fresh);
        }
    }

    if (allowed) {
        if (rq->result == RRL_RES_NONE || rq->result == RRL_RES_ALLOWED) {
            rq->result = src == RRL_BY_STORE ? RRL_RES_ALLOWED
                                             : RRL_RES_LOCAL_ALLOWED;
        }
        rrl_answer_env(r, rq, &rq->env_added);
        return DECLINED;
    }
    if (rrl_config_mode(dc) == RRL_DRY_RUN) {
        rq->result = RRL_RES_DRY_RUN_DENIED;
        rrl_answer_env(r, rq, &rq->env_added);
        if (APLOGrinfo(r)
            && rrl_log_gate(shown->limit, RRL_LOG_DRY_RUN, &more)) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RRL_LOGNO(00007)
                          "%s %s would deny this request to %s "
                          "(dry-run)%s", shown->limit->directive,
                          shown->limit->name,
                          r->server->server_hostname,
                          rrl_log_more(r, more, "such requests"));
        }
        return DECLINED;
    }
    rq->result = src == RRL_BY_STORE ? RRL_RES_DENIED : RRL_RES_LOCAL_DENIED;
    rq->denied = 1;              /* this decision spent nothing */
    rrl_answer_env(r, rq, &rq->env_added);
    apr_table_setn(r->err_headers_out, "Retry-After",
                   rrl_util_i64(r->pool, retry > RRL_USEC_PER_SEC
                                    ? rrl_ceil_sec(retry) : 1));
    if (APLOGrinfo(r) && rrl_log_gate(shown->limit, RRL_LOG_DENIED, &more)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RRL_LOGNO(00008)
                      "%s %s denies this request to %s, retry in %"
                      APR_INT64_T_FMT " ms%s", shown->limit->directive,
                      shown->limit->name,
                      r->server->server_hostname, (retry + 999) / 1000,
                      rrl_log_more(r, more, "denials"));
    }
    return rrl_config_status(dc);
}

/* RateLimitOnError allow or deny: the answer when no store could decide */
int rrl_answer_on_error(request_rec *r, const rrl_dir_conf_t *dc,
                        rrl_req_t *rq)
{
    if (rrl_config_on_error(dc) != RRL_ONERR_DENY) {
        if (rq->result != RRL_RES_DRY_RUN_DENIED) {
            rq->result = RRL_RES_FALLBACK_ALLOWED;
        }
        rrl_answer_env(r, rq, &rq->env_added);
        return DECLINED;
    }
    if (rrl_config_mode(dc) == RRL_DRY_RUN) {
        rq->result = RRL_RES_DRY_RUN_DENIED;
        rrl_answer_env(r, rq, &rq->env_added);
        return DECLINED;
    }
    rq->result = RRL_RES_FALLBACK_DENIED;
    rq->denied = 1;
    rrl_answer_env(r, rq, &rq->env_added);
    apr_table_setn(r->err_headers_out, "Retry-After", "1");
    return rrl_config_status(dc);
}
