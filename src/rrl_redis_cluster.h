/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * Redis Cluster: hash slots, the slot map learnt from CLUSTER SLOTS, MOVED
 * and ASK followed, and one EVALSHA per slot of a request's keys.
 */

#ifndef RRL_REDIS_CLUSTER_H
#define RRL_REDIS_CLUSTER_H

#include "rrl.h"
#include "rrl_redis_pipe.h"

int rrl_redis_cluster_learn(rrl_backend_t *be, const redisReply *reply,
                            const char *asked);
const char *rrl_redis_cluster_refresh(rrl_backend_t *be, apr_pool_t *p);
rrl_node_t *rrl_redis_cluster_route(rrl_backend_t *be, unsigned slot);
rrl_redis_rc_e rrl_redis_cluster_decide(request_rec *r, rrl_backend_t *be,
                                        rrl_item_t *items, int n,
                                        apr_int64_t *now, const char **errp);

#endif /* RRL_REDIS_CLUSTER_H */
