/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The options of RateLimit and RateLimitConcurrency (name=value after the
 * RATE or N), each parsed into the limit by its function, and the
 * directives' messages ("RateLimit: ...").
 */

#ifndef RRL_OPTION_H
#define RRL_OPTION_H

#include "rrl.h"

typedef enum {
    RRL_OPT_BURST = 0, RRL_OPT_KEY, RRL_OPT_NAME, RRL_OPT_ALGORITHM,
    RRL_OPT_COST, RRL_OPT_PHASE, RRL_OPT_IPV6_PREFIX, RRL_OPT_COUNT,
    RRL_OPT_PLANS, RRL_OPT_LEASE, RRL_OPT_MAX
} rrl_option_e;

#define RRL_OPT(o) (1u << (o))
/* The options of RateLimit and of RateLimitConcurrency */
#define RRL_OPTS_RATE (RRL_OPT(RRL_OPT_LEASE) - 1)
#define RRL_OPTS_CONCURRENCY (RRL_OPT(RRL_OPT_KEY) | RRL_OPT(RRL_OPT_NAME) \
                              | RRL_OPT(RRL_OPT_PHASE) \
                              | RRL_OPT(RRL_OPT_IPV6_PREFIX) \
                              | RRL_OPT(RRL_OPT_LEASE))

int rrl_option_name_char(int c);
const char *rrl_option_err(cmd_parms *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *rrl_option_parse(cmd_parms *cmd, rrl_limit_t *l, int argc,
                             char *const argv[], unsigned accepted,
                             unsigned *given);

#endif /* RRL_OPTION_H */
