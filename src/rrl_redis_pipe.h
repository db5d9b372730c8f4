/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * A node's pipeline: the calls of a child's requests queue while a round
 * trip to the node is under way and leave together in the next; one round
 * trip on a pooled connection, with its retries (stale connection, a
 * Sentinel master turned replica, NOSCRIPT); the EVALSHA that decides,
 * which a round trip joins with the other decisions for its node (its
 * slot) into one (rrl_batch).
 */

#ifndef RRL_REDIS_PIPE_H
#define RRL_REDIS_PIPE_H

#include "rrl.h"
#include "rrl_redis_conn.h"
#include "rrl_resp.h"

#define RRL_SEND 1

#define RRL_RECEIVE 2

int rrl_redis_pipe_roundtrip(apr_pool_t *p, const rrl_backend_t *be,
                             rrl_conn_t *conn, rrl_call_t *const *calls, int n,
                             int how, const char **errp, int *stale);
int rrl_redis_pipe_not_master(const rrl_reply_t *rep);
rrl_redis_rc_e rrl_redis_pipe_call(request_rec *r, rrl_backend_t *be,
                                   rrl_node_t *node, const char *what,
                                   const char *cmd, apr_size_t len, int asking,
                                   rrl_reply_t *rep, const char **errp);
rrl_redis_rc_e rrl_redis_pipe_eval(request_rec *r, rrl_backend_t *be,
                                   rrl_node_t *node, int asking,
                                   rrl_item_t *items, int n, apr_int64_t *now,
                                   char *redirect, const char **errp);

#endif /* RRL_REDIS_PIPE_H */
