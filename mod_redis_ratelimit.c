/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * mod_redis_ratelimit: request rate limits for Apache httpd 2.4, enforced
 * globally across many Apache instances through Redis, or on one server in
 * a shared-memory store shared by all of its children.
 *
 *   RateLimit 100/h burst=20
 *   <Location "/login">
 *       RateLimit 5/min name=login
 *   </Location>
 *
 * Every limit that applies to a request phase is decided in one step: all
 * are checked, and only when all allow is anything spent.  The four
 * algorithms (gcra, token-bucket, fixed-window, sliding-window) are integer
 * arithmetic on microseconds, identical in the local store (src/rrl_algo.c)
 * and in the Redis script (lua/ratelimit.lua).
 *
 * This file is the module: its directives, its hooks, and the lifecycle
 * hooks that set up each area of src/ (docs/architecture.md).
 */

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"

#include "rrl.h"
#include "rrl_answer.h"
#include "rrl_config.h"
#include "rrl_counters.h"
#include "rrl_decide.h"
#include "rrl_deny.h"
#include "rrl_limit.h"
#include "rrl_local.h"
#include "rrl_plan.h"
#include "rrl_plan_file.h"
#include "rrl_redis.h"
#include "rrl_reserve.h"
#include "rrl_script.h"
#include "rrl_status.h"

module AP_MODULE_DECLARE_DATA redis_ratelimit_module;

static const command_rec rrl_cmds[] = {
    AP_INIT_TAKE_ARGV("RateLimit", rrl_limit_cmd, NULL,
                      RSRC_CONF | ACCESS_CONF,
                      "RATE [burst=N] [key=EXPR] [name=NAME] "
                      "[algorithm=gcra|token-bucket|fixed-window|"
                      "sliding-window] [cost=N] [phase=access|auth] "
                      "[ipv6-prefix=N] [count=STATUS,...] "
                      "[plans=redis|FILE], or 'off'"),
    AP_INIT_TAKE_ARGV("RateLimitConcurrency", rrl_limit_concurrency_cmd,
                      NULL, RSRC_CONF | ACCESS_CONF,
                      "N [key=EXPR] [name=NAME] [lease=DUR] "
                      "[phase=access|auth] [ipv6-prefix=N]: at most N "
                      "requests of a key in flight"),
    AP_INIT_TAKE1("RateLimitRedis", rrl_config_cmd_redis, NULL, RSRC_CONF,
                  "Redis URL the limits are kept in, or off (default: this "
                  "server's shared memory)"),
    AP_INIT_TAKE12("RateLimitRedisTimeout", rrl_config_cmd_redis_timeout, NULL,
                   RSRC_CONF,
                   "[connect=DUR] [command=DUR] (default 100ms each)"),
    AP_INIT_TAKE_ARGV("RateLimitRedisPool", rrl_config_cmd_redis_pool, NULL,
                      RSRC_CONF,
                      "[max=N] [keep=N] [ttl=DUR]: connections per child"),
    AP_INIT_TAKE12("RateLimitOnError", rrl_config_cmd_on_error, NULL,
                   RSRC_CONF | ACCESS_CONF,
                   "allow, deny or local [instances=N]: what decides while "
                   "Redis cannot (default local)"),
    AP_INIT_TAKE1("RateLimitMode", rrl_config_cmd_mode, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "enforce (default) or dry-run: count and log, never deny"),
    AP_INIT_TAKE1("RateLimitStatus", rrl_config_cmd_status, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "HTTP status of a denial, 400-599 (default 429)"),
    AP_INIT_TAKE1("RateLimitHeaders", rrl_config_cmd_headers, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "off, legacy (default), ietf or both"),
    AP_INIT_ITERATE("RateLimitExempt", rrl_config_cmd_exempt, NULL,
                    RSRC_CONF | ACCESS_CONF,
                    "client IP addresses or CIDR ranges no limit applies to"),
    AP_INIT_TAKE1("RateLimitKeyPrefix", rrl_config_cmd_key_prefix, NULL,
                  RSRC_CONF,
                  "prefix of every key the module stores (default rl:)"),
    AP_INIT_FLAG("RateLimitDenyCache", rrl_config_cmd_deny_cache, NULL,
                 RSRC_CONF,
                 "on (default): answer keys Redis denied locally until they "
                 "may pass again"),
    AP_INIT_TAKE1("RateLimitLocalSize", rrl_config_cmd_local_size, NULL,
                  RSRC_CONF,
                  "bytes of shared memory for the local store (default 8M)"),
    { NULL }
};

static int rrl_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                          apr_pool_t *ptemp)
{
    (void)plog;
    (void)ptemp;
    rrl_limit_pre_config(pconf);
    rrl_config_pre_config();
    return OK;
}

/* Checks across sections, where apachectl -t still runs */
static int rrl_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                            apr_pool_t *ptemp, server_rec *s)
{
    int rv;

    (void)plog;
    (void)s;
    rv = rrl_limit_check_config(pconf, ptemp);
    if (rrl_plan_file_check_config(pconf, ptemp) != OK) {
        rv = !OK;
    }
    return rv;
}

static int rrl_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    const rrl_srv_conf_t *sc = ap_get_module_config(s->module_config,
                                                    &redis_ratelimit_module);

    (void)plog;
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    if (rrl_local_post_config(s, rrl_config_local_size(sc),
                              rrl_local_needed(s)) != APR_SUCCESS
        || rrl_counters_create(s) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rrl_script_init(pconf);
    if (rrl_limit_post_config(pconf, ptemp, s) != APR_SUCCESS
        || rrl_plan_file_post_config(pconf, ptemp, s) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (rrl_redis_post_config(pconf, ptemp, s) != OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    rrl_redis_startup_check(ptemp, s);
    ap_add_version_component(pconf, "mod_redis_ratelimit/" RRL_VERSION);
    return OK;
}

static void rrl_child_init(apr_pool_t *pchild, server_rec *s)
{
    rrl_answer_child_init(pchild);
    rrl_reserve_child_init(pchild);
    /* the connection pools; the deny cache and the memory of plans when
     * any limit is in Redis */
    if (rrl_redis_child_init(pchild, s) > 0) {
        rrl_deny_child_init(pchild, s);
        rrl_plan_child_init(pchild, s);
    }
}

static void rrl_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(rrl_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(rrl_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(rrl_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(rrl_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_optional_fn_retrieve(rrl_decide_retrieve, NULL, NULL,
                                 APR_HOOK_MIDDLE);
    /* before mod_http2 takes an Upgrade: h2c request over (it declines) */
    ap_hook_protocol_switch(rrl_decide_protocol_switch, NULL, NULL,
                            APR_HOOK_REALLY_FIRST);
    /* first among access checks: a denied request costs no authentication */
    ap_hook_access_checker(rrl_decide_access, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_fixups(rrl_decide_fixups, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_log_transaction(rrl_decide_log, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_handler(rrl_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    rrl_reserve_register();       /* the concurrency slots' lease filter */
}

AP_DECLARE_MODULE(redis_ratelimit) = {
    STANDARD20_MODULE_STUFF,
    rrl_config_create_dir,
    rrl_config_merge_dir,
    rrl_config_create_srv,
    rrl_config_merge_srv,
    rrl_cmds,
    rrl_register_hooks,
    AP_MODULE_FLAG_NONE
};
