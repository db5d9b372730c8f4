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
#include "rrl_config.h"
#include "rrl_redis_pipe.h"

typedef enum {
    RRL_GATE_CLOSED = 0,     /* ask Redis */
    RRL_GATE_PROBE,          /* ask Redis: the first request after a pause */
    RRL_GATE_OPEN            /* do not: RateLimitOnError decides at once */
} rrl_gate_e;

rrl_redis_rc_e rrl_redis_decide(request_rec *r, rrl_backend_t *be,
                                rrl_item_t *items, int n, apr_int64_t *now,
                                const char **errp);
rrl_redis_rc_e rrl_redis_ping(request_rec *r, rrl_backend_t *be,
                              const char **errp);
void rrl_redis_log_error(request_rec *r, rrl_backend_t *be,
                         const rrl_dir_conf_t *dc, const char *err);
rrl_gate_e rrl_redis_breaker_gate(rrl_backend_t *be, apr_time_t now);
void rrl_redis_breaker_success(request_rec *r, rrl_backend_t *be);
void rrl_redis_breaker_failure(request_rec *r, rrl_backend_t *be,
                         const rrl_dir_conf_t *dc, const char *err);

int rrl_redis_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                          server_rec *s);
int rrl_redis_child_init(apr_pool_t *pchild, server_rec *s);
const apr_array_header_t *rrl_redis_backends(void);

#endif /* RRL_REDIS_H */
