/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The Redis stack as the decision and the status page see it: the
 * backends this server uses, a request's items decided in Redis (one
 * EVALSHA, or one per Cluster slot), PING, the circuit breaker of each
 * child, and Redis errors logged at most once a second.
 */

#ifndef RRL_REDIS_H
#define RRL_REDIS_H

#include "rrl.h"
#include "rrl_redis_pipe.h"

rrl_redis_rc_e rrl_redis_decide(request_rec *r, rrl_backend_t *be,
                                const char *on_error, rrl_item_t *items,
                                int n, apr_int64_t *now);
rrl_redis_rc_e rrl_redis_health(request_rec *r, rrl_backend_t *be,
                                const char *on_error, const char **errp);

int rrl_redis_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                          server_rec *s);
void rrl_redis_startup_check(apr_pool_t *ptemp, server_rec *s);
int rrl_redis_child_init(apr_pool_t *pchild, server_rec *s);
const apr_array_header_t *rrl_redis_backends(void);

#endif /* RRL_REDIS_H */
