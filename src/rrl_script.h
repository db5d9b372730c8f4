/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The contract with lua/ratelimit.lua: its SHA-1, SCRIPT LOAD, the
 * EVALSHA that decides the limits of a batch of requests (KEYS: each
 * request's items' keys, then its plan keys; ARGV: "" (now), the number of
 * requests, then per request its number of items and per item algorithm,
 * count, period, burst, interval, unit, cost, mode, until or a
 * concurrency slot's member, plan key) and a request's entry of its reply
 * { all, now, then allowed, remaining, reset, retry per item, then 4 per
 * plan read }, or an error, all formatted once at startup where they can
 * be.  A request makes its EVALSHA as a batch of one; a round trip joins
 * those of a node (a slot) into one batch.
 */

#ifndef RRL_SCRIPT_H
#define RRL_SCRIPT_H

#include "rrl.h"
#include "rrl_resp.h"

extern const char *rrl_script_sha;          /* of lua/ratelimit.lua */
extern const char *rrl_script_load;    /* SCRIPT LOAD <the script> */
extern apr_size_t rrl_script_load_len;

/* A request's EVALSHA, a batch of one: where its KEYS and its ARGV (from
 * its number of items) are in it, so that a round trip can join it with
 * others into one batch */
typedef struct {
    const char *cmd;
    apr_size_t len;
    int nkeys, nargs;
    apr_size_t keys_at, keys_len;
    apr_size_t args_at, args_len;
    unsigned slot;                /* Cluster: of its keys; else 0 */
} rrl_script_parts_t;

/* room for a batch's head and its ARGV[1..2] (rrl_script_batch_head,
 * rrl_script_batch_now) */
#define RRL_SCRIPT_BATCH_HEAD 160

void rrl_script_init(apr_pool_t *p);
char *rrl_script_batch_head(char *o, int nkeys, int nargs);
char *rrl_script_batch_now(char *o, int n);
const char *rrl_script_evalsha(apr_pool_t *p, const rrl_item_t *items, int n,
                               rrl_script_parts_t *parts);
const char *rrl_script_reply(apr_pool_t *p, const rrl_reply_t *rep,
                             rrl_item_t *items, int n, apr_int64_t *now);

#endif /* RRL_SCRIPT_H */
