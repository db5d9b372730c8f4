/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The contract with lua/ratelimit.lua: its SHA-1, SCRIPT LOAD, the
 * EVALSHA that decides a request's limits (KEYS: the items' keys; ARGV:
 * "" then per item algorithm, count, period, burst, interval, unit, cost,
 * mode, until or a concurrency slot's member) and its reply { all, now,
 * then allowed, remaining, reset, retry per item }, all formatted once at
 * startup where they can be.
 */

#ifndef RRL_SCRIPT_H
#define RRL_SCRIPT_H

#include "rrl.h"
#include "rrl_resp.h"

extern const char *rrl_script_sha;          /* of lua/ratelimit.lua */
extern const char *rrl_script_load;    /* SCRIPT LOAD <the script> */
extern apr_size_t rrl_script_load_len;

void rrl_script_init(apr_pool_t *p);
const char *rrl_script_evalsha(apr_pool_t *p, const rrl_item_t *items, int n,
                               apr_size_t *lenp);
const char *rrl_script_reply(apr_pool_t *p, const rrl_reply_t *rep,
                             rrl_item_t *items, int n, apr_int64_t *now);

#endif /* RRL_SCRIPT_H */
