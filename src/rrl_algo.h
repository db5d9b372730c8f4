/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The four algorithms in integer microseconds (gcra, token-bucket,
 * fixed-window, sliding-window) and RATE, as the local store decides with
 * them and lua/ratelimit.lua does in Redis.  APR only: t/rrl_vectors runs
 * them outside httpd.
 */

#ifndef RRL_ALGO_H
#define RRL_ALGO_H

#include "rrl.h"

/* The algorithms' names, in rrl_alg_e order, NULL-terminated */
extern const char *const rrl_algo_names[];

/* What the algorithms compute besides the answer */
typedef struct {
    int allowed;
    apr_int64_t remaining, reset, retry;
    int write;                    /* store next[] for ttl us (0: delete) */
    apr_int64_t next[3];
    apr_int64_t ttl;
    int cut;                      /* store cut_to for cut_ttl us, whatever
                                   * is decided (p->capped, gcra) */
    apr_int64_t cut_to, cut_ttl;
} rrl_outcome_t;

/* A plan (plans=): "RATE", "RATE burst=N" or "off", as parsed */
typedef struct {
    int off;                      /* "off": the limit does not apply */
    apr_int64_t count, period;    /* of RATE */
    apr_int64_t burst;            /* 0: not given */
    const char *rate;             /* RATE as written, for messages */
} rrl_algo_plan_t;

const char *rrl_algo_parse_rate(apr_pool_t *p, const char *text,
                                apr_int64_t *count, apr_int64_t *period);
const char *rrl_algo_check_params(apr_pool_t *p, const char *rate,
                                  rrl_params_t *rp, apr_int64_t cost,
                                  int burst_given);
const char *rrl_algo_parse_plan(apr_pool_t *p, const char *text,
                                rrl_algo_plan_t *pl);
const char *rrl_algo_plan_params(apr_pool_t *p, const rrl_algo_plan_t *pl,
                                 const rrl_params_t *limit, apr_int64_t cost,
                                 rrl_params_t *out);
void rrl_algo_decide(const rrl_params_t *p, apr_int64_t cost, rrl_mode_e mode,
                     apr_int64_t until, const apr_int64_t *st,
                     int stored_alg, apr_int64_t now, rrl_outcome_t *o);

#endif /* RRL_ALGO_H */
