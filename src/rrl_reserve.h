/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * What a request holds in the stores beyond its decision: the spends of
 * count= limits, reserved at check time and given back at log time unless
 * the final status is one they count; and the slots of concurrency limits
 * (RateLimitConcurrency), each leased, renewed while the response goes on
 * (an output filter), released when the request ends: at log time, or
 * from its pool's cleanup when it never gets there, exactly once.  Kept in
 * the request's state (rrl_req_t.reserved), copied to the connection when
 * an Upgrade: h2c request hands them to its stream 1.
 */

#ifndef RRL_RESERVE_H
#define RRL_RESERVE_H

#include "rrl.h"
#include "rrl_answer.h"

#define RRL_LEASE_FILTER "RATELIMIT_LEASE"

void rrl_reserve_register(void);
void rrl_reserve_child_init(apr_pool_t *pchild);
apr_uint64_t rrl_reserve_ticket(void);
void rrl_reserve_add(request_rec *r, rrl_req_t *rq, const rrl_item_t *items,
                     int n, int local);
apr_array_header_t *rrl_reserve_copy(apr_pool_t *p,
                                     const apr_array_header_t *reserved);
void rrl_reserve_take_over(request_rec *r, rrl_req_t *rq);
void rrl_reserve_settle(request_rec *r, rrl_req_t *rq, int status);

#endif /* RRL_RESERVE_H */
