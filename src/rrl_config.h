/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The module's configuration: per directory (limits, mode, status,
 * headers, exemptions, RateLimitOnError) and per server (Redis, its
 * timeouts and pool, key prefix, deny cache, local store size); create,
 * merge, the accessors that hold the defaults, and every directive's
 * handler but RateLimit's (rrl_limit.c).
 */

#ifndef RRL_CONFIG_H
#define RRL_CONFIG_H

#include "rrl.h"
#include "rrl_url.h"

#define RRL_DEFAULT_TIMEOUT apr_time_from_msec(100)

#define RRL_DEFAULT_POOL_TTL apr_time_from_sec(60)

#define RRL_MAX_TIMEOUT    apr_time_from_sec(60)

#define RRL_MAX_POOL       4096

#define RRL_DEFAULT_LOCAL_SIZE (8 * 1024 * 1024)

#define RRL_MIN_LOCAL_SIZE (64 * 1024)

#define RRL_MAX_LOCAL_SIZE (APR_INT64_C(64) * 1024 * 1024 * 1024)

typedef struct {
    apr_array_header_t *limits;   /* rrl_limit_t *: all that apply here */
    int off;                      /* "RateLimit off" drops what's inherited */
    int unnamed;                  /* unnamed limits so far (default names) */
    int unnamed_concurrency;      /* of RateLimitConcurrency */
    int mode;
    int status;
    int headers;
    apr_array_header_t *exempt;   /* apr_ipsubnet_t * */
    int on_error;
    int on_error_instances;
} rrl_dir_conf_t;

typedef struct {
    const char *key_prefix;
    int deny_cache;
    apr_int64_t local_size;       /* main server only */
    const rrl_redis_url_t *redis; /* NULL: unset; &rrl_url_off: off */
    const ap_directive_t *redis_at;   /* its line, while parsing */
    apr_interval_time_t connect_timeout, command_timeout;
    int pool_max, pool_keep;
    apr_interval_time_t pool_ttl;
    struct rrl_backend *backend;  /* set in post_config */
} rrl_srv_conf_t;

/* RateLimitOnError's words, in rrl_on_error_e order */
extern const char *const rrl_config_on_error_names[];

void *rrl_config_create_dir(apr_pool_t *p, char *dir);
void *rrl_config_merge_dir(apr_pool_t *p, void *basev, void *addv);
void *rrl_config_create_srv(apr_pool_t *p, server_rec *s);
void *rrl_config_merge_srv(apr_pool_t *p, void *basev, void *addv);

int rrl_config_mode(const rrl_dir_conf_t *dc);
int rrl_config_status(const rrl_dir_conf_t *dc);
int rrl_config_headers(const rrl_dir_conf_t *dc);
int rrl_config_on_error(const rrl_dir_conf_t *dc);
int rrl_config_on_error_instances(const rrl_dir_conf_t *dc);
const char *rrl_config_on_error_name(const rrl_dir_conf_t *dc);
int rrl_config_deny_cache(const rrl_srv_conf_t *sc);
const char *rrl_config_prefix(const rrl_srv_conf_t *sc);
apr_size_t rrl_config_local_size(const rrl_srv_conf_t *sc);
int rrl_config_is_exempt(request_rec *r, const rrl_dir_conf_t *dc);
void rrl_config_pre_config(void);
int rrl_config_local_named(void);

const char *rrl_config_context(cmd_parms *cmd, unsigned forbidden);
const char *rrl_config_parse_duration(cmd_parms *cmd, const char *what,
                                      const char *v, apr_interval_time_t max,
                                      apr_interval_time_t *out);
const char *rrl_config_cmd_mode(cmd_parms *cmd, void *dcfg, const char *arg);
const char *rrl_config_cmd_status(cmd_parms *cmd, void *dcfg, const char *arg);
const char *rrl_config_cmd_headers(cmd_parms *cmd, void *dcfg,
                                   const char *arg);
const char *rrl_config_cmd_exempt(cmd_parms *cmd, void *dcfg, const char *arg);
const char *rrl_config_cmd_key_prefix(cmd_parms *cmd, void *dummy,
                                      const char *arg);
const char *rrl_config_cmd_deny_cache(cmd_parms *cmd, void *dummy, int on);
const char *rrl_config_cmd_local_size(cmd_parms *cmd, void *dummy,
                                      const char *arg);
const char *rrl_config_cmd_redis(cmd_parms *cmd, void *dummy, const char *arg);
const char *rrl_config_cmd_redis_timeout(cmd_parms *cmd, void *dummy,
                                         const char *a1, const char *a2);
const char *rrl_config_cmd_redis_pool(cmd_parms *cmd, void *dummy, int argc,
                                      char *const argv[]);
const char *rrl_config_cmd_on_error(cmd_parms *cmd, void *dcfg,
                                    const char *how, const char *opt);

#endif /* RRL_CONFIG_H */
