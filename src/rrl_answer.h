/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The answer of a decision, as the client and the log see it: the
 * request's state (rrl_req_t, on its initial request), the rate-limit
 * headers of the limit with the least left, RATELIMIT_*, the denial
 * status and Retry-After, RateLimitOnError allow and deny, and the info
 * lines of denials (at most one a second per child and limit).
 */

#ifndef RRL_ANSWER_H
#define RRL_ANSWER_H

#include "rrl.h"
#include "rrl_config.h"

/* Per-request state, kept on the initial request */
typedef struct {
    int exempt_checked;
    int exempt;
    rrl_result_e result;
    int denied;
    const rrl_limit_t *shown;     /* limit whose headers are out */
    apr_int64_t shown_count;      /* its count as decided (a plan's) */
    apr_int64_t shown_remaining;
    int env_added;                /* RATELIMIT_*: 1 RESULT, 2 all four */
    apr_array_header_t *reserved; /* rrl_reserved_t: what count= limits
                                   * spent, given back at log time unless
                                   * the final status is one they count,
                                   * and the concurrency slots it holds
                                   * (rrl_reserve.c) */
    apr_time_t renew_at;          /* when the slots' leases are renewed */
    int holding;                  /* its release is set up (a pool cleanup,
                                   * the lease filter) */
    int replay;                   /* stream 1 of an h2c upgrade: decided */
} rrl_req_t;

void rrl_answer_child_init(apr_pool_t *pchild);
rrl_req_t *rrl_answer_state(request_rec *r);
void rrl_answer_env(request_rec *r, const rrl_req_t *rq, int *added);
int rrl_answer_items(request_rec *r, const rrl_dir_conf_t *dc, rrl_req_t *rq,
                     rrl_item_t *items, int n, apr_int64_t now,
                     rrl_source_e src);
int rrl_answer_on_error(request_rec *r, const rrl_dir_conf_t *dc,
                        rrl_req_t *rq);

#endif /* RRL_ANSWER_H */
