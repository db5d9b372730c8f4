/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * RateLimit and RateLimitConcurrency: the directives (RATE or N, and
 * options), default names from where they stand, the checks across
 * sections that apachectl -t runs, and each limit's texts formatted once
 * at startup.  Every limit parsed is kept in
 * one list (rrl_limit_all), and the first of each (name, scope) pair in
 * another (rrl_limit_pairs): what the status page lists.
 */

#ifndef RRL_LIMIT_H
#define RRL_LIMIT_H

#include "rrl.h"

const char *rrl_limit_cmd(cmd_parms *cmd, void *dcfg, int argc,
                          char *const argv[]);
const char *rrl_limit_concurrency_cmd(cmd_parms *cmd, void *dcfg, int argc,
                                      char *const argv[]);

/* RateLimitConcurrency's lease when not given: Apache's Timeout for the
 * server, at least this */
#define RRL_DEFAULT_LEASE apr_time_from_sec(60)

void rrl_limit_pre_config(apr_pool_t *pconf);
int rrl_limit_check_config(apr_pool_t *pconf, apr_pool_t *ptemp);
apr_status_t rrl_limit_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                                   server_rec *s);
apr_array_header_t *rrl_limit_all(void);
const apr_array_header_t *rrl_limit_pairs(void);
const char *rrl_limit_vhost(const rrl_limit_t *l);

#endif /* RRL_LIMIT_H */
