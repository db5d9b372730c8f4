/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The module's configuration: create, merge, accessors, and the handlers
 * of every directive but RateLimit.
 */

#include "apr_lib.h"
#include "apr_strings.h"

#include <string.h>

#include "http_core.h"

#include "rrl_private.h"
#include "rrl_config.h"
#include "rrl_tls.h"
#include "rrl_util.h"

const char *const rrl_config_on_error_names[] = {
    "allow", "deny", "local", NULL
};

void *rrl_config_create_dir(apr_pool_t *p, char *dir)
{
    rrl_dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

    (void)dir;
    dc->mode = RRL_UNSET;
    dc->status = RRL_UNSET;
    dc->headers = RRL_UNSET;
    dc->on_error = RRL_UNSET;
    dc->on_error_instances = RRL_UNSET;
    return dc;
}

#define RRL_MERGE_INT(f) n->f = (add->f != RRL_UNSET) ? add->f : base->f

static int rrl_same_limit(const rrl_limit_t *a, const rrl_limit_t *b)
{
    /* one name in one scope is one limit (check_config made sure) */
    return a == b || (a->in_vhost == b->in_vhost
                      && (!a->in_vhost || a->server == b->server)
                      && strcmp(a->name, b->name) == 0);
}

/* base's limits, then add's that are not already there */
static apr_array_header_t *rrl_limits_concat(apr_pool_t *p,
                                             const apr_array_header_t *base,
                                             const apr_array_header_t *add)
{
    apr_array_header_t *all;
    int i, j;

    if (!base || !base->nelts) {
        return (apr_array_header_t *)add;
    }
    if (!add || !add->nelts) {
        return (apr_array_header_t *)base;
    }
    all = apr_array_copy(p, base);
    for (i = 0; i < add->nelts; i++) {
        const rrl_limit_t *l = APR_ARRAY_IDX(add, i, const rrl_limit_t *);

        for (j = 0; j < base->nelts; j++) {
            if (rrl_same_limit(l, APR_ARRAY_IDX(base, j, rrl_limit_t *))) {
                break;
            }
        }
        if (j == base->nelts) {
            APR_ARRAY_PUSH(all, const rrl_limit_t *) = l;
        }
    }
    return all;
}

void *rrl_config_merge_dir(apr_pool_t *p, void *basev, void *addv)
{
    const rrl_dir_conf_t *base = basev, *add = addv;
    rrl_dir_conf_t *n = apr_pcalloc(p, sizeof(*n));

    /* limits add up down the tree; "RateLimit off" starts over here */
    n->limits = add->off ? add->limits
                         : rrl_limits_concat(p, base->limits, add->limits);
    n->off = 0;
    n->unnamed = 0;
    RRL_MERGE_INT(mode);
    RRL_MERGE_INT(status);
    RRL_MERGE_INT(headers);
    RRL_MERGE_INT(on_error);
    RRL_MERGE_INT(on_error_instances);
    /* exemptions add up too: an exempt monitor stays exempt everywhere */
    if (base->exempt && add->exempt) {
        n->exempt = apr_array_append(p, base->exempt, add->exempt);
    }
    else {
        n->exempt = add->exempt ? add->exempt : base->exempt;
    }
    return n;
}

void *rrl_config_create_srv(apr_pool_t *p, server_rec *s)
{
    rrl_srv_conf_t *sc = apr_pcalloc(p, sizeof(*sc));

    (void)s;
    sc->deny_cache = RRL_UNSET;
    sc->local_size = RRL_UNSET;
    sc->connect_timeout = RRL_UNSET;
    sc->command_timeout = RRL_UNSET;
    sc->pool_max = RRL_UNSET;
    sc->pool_keep = RRL_UNSET;
    sc->pool_ttl = RRL_UNSET;
    return sc;
}

void *rrl_config_merge_srv(apr_pool_t *p, void *basev, void *addv)
{
    const rrl_srv_conf_t *base = basev, *add = addv;
    rrl_srv_conf_t *n = apr_pcalloc(p, sizeof(*n));

    n->key_prefix = add->key_prefix ? add->key_prefix : base->key_prefix;
    RRL_MERGE_INT(deny_cache);
    n->local_size = base->local_size;    /* global only */
    n->redis = add->redis ? add->redis : base->redis;
    n->redis_at = add->redis ? add->redis_at : base->redis_at;
    RRL_MERGE_INT(connect_timeout);
    RRL_MERGE_INT(command_timeout);
    RRL_MERGE_INT(pool_max);
    RRL_MERGE_INT(pool_keep);
    RRL_MERGE_INT(pool_ttl);
    n->backend = NULL;
    return n;
}

int rrl_config_mode(const rrl_dir_conf_t *dc)
{
    return dc->mode != RRL_UNSET ? dc->mode : RRL_ENFORCE;
}

int rrl_config_status(const rrl_dir_conf_t *dc)
{
    return dc->status != RRL_UNSET ? dc->status : HTTP_TOO_MANY_REQUESTS;
}

int rrl_config_headers(const rrl_dir_conf_t *dc)
{
    return dc->headers != RRL_UNSET ? dc->headers : RRL_HEADERS_LEGACY;
}

int rrl_config_on_error(const rrl_dir_conf_t *dc)
{
    return dc->on_error != RRL_UNSET ? dc->on_error : RRL_ONERR_LOCAL;
}

/* RateLimitOnError's word, for messages */
const char *rrl_config_on_error_name(const rrl_dir_conf_t *dc)
{
    return rrl_config_on_error_names[rrl_config_on_error(dc)];
}

/* RateLimitOnError local instances=N: N (1 when not given) */
int rrl_config_on_error_instances(const rrl_dir_conf_t *dc)
{
    return dc->on_error_instances != RRL_UNSET ? dc->on_error_instances : 1;
}

int rrl_config_deny_cache(const rrl_srv_conf_t *sc)
{
    return sc->deny_cache != RRL_UNSET ? sc->deny_cache : 1;
}

const char *rrl_config_prefix(const rrl_srv_conf_t *sc)
{
    return sc->key_prefix ? sc->key_prefix : RRL_DEFAULT_PREFIX;
}

apr_size_t rrl_config_local_size(const rrl_srv_conf_t *sc)
{
    return sc->local_size != RRL_UNSET ? (apr_size_t)sc->local_size
                                       : RRL_DEFAULT_LOCAL_SIZE;
}

int rrl_config_is_exempt(request_rec *r, const rrl_dir_conf_t *dc)
{
    int i;

    if (!dc->exempt || !r->useragent_addr) {
        return 0;
    }
    for (i = 0; i < dc->exempt->nelts; i++) {
        if (apr_ipsubnet_test(APR_ARRAY_IDX(dc->exempt, i, apr_ipsubnet_t *),
                              r->useragent_addr)) {
            return 1;
        }
    }
    return 0;
}

/*
 * Every directive's first check.  None takes effect from .htaccess,
 * whatever AllowOverride or AllowOverrideList say: a tenant must neither
 * lift nor change the host's limits (nor write the server's settings at
 * request time, nor make a limit that has no scope).  httpd answers 500
 * for that directory and logs the file and this reason.  forbidden: where
 * else it may not stand (ap_check_cmd_context).
 */
const char *rrl_config_context(cmd_parms *cmd, unsigned forbidden)
{
    return ap_check_cmd_context(cmd, NOT_IN_HTACCESS | forbidden);
}

const char *rrl_config_cmd_mode(cmd_parms *cmd, void *dcfg, const char *arg)
{
    static const char *const modes[] = { "enforce", "dry-run", NULL };
    rrl_dir_conf_t *dc = dcfg;
    int mode = rrl_util_keyword(modes, arg);   /* in rrl_run_mode_e order */
    const char *err = rrl_config_context(cmd, 0);

    if (err) {
        return err;
    }
    if (mode < 0) {
        return apr_psprintf(cmd->pool, "RateLimitMode: '%s' is not a mode; "
                            "expected enforce or dry-run", arg);
    }
    dc->mode = mode;
    return NULL;
}

const char *rrl_config_cmd_status(cmd_parms *cmd, void *dcfg, const char *arg)
{
    rrl_dir_conf_t *dc = dcfg;
    apr_int64_t st;
    const char *err = rrl_config_context(cmd, 0);

    if (err) {
        return err;
    }
    if (!rrl_util_parse_int(arg, 400, 599, &st)) {
        return apr_psprintf(cmd->pool, "RateLimitStatus: '%s' is not "
                            "accepted; expected an HTTP status from 400 to "
                            "599, such as 429 or 503", arg);
    }
    dc->status = (int)st;
    return NULL;
}

const char *rrl_config_cmd_headers(cmd_parms *cmd, void *dcfg,
                                   const char *arg)
{
    static const char *const names[] = { "off", "legacy", "ietf", "both",
                                         NULL };   /* rrl_headers_e */
    rrl_dir_conf_t *dc = dcfg;
    int how = rrl_util_keyword(names, arg);
    const char *err = rrl_config_context(cmd, 0);

    if (err) {
        return err;
    }
    if (how < 0) {
        return apr_psprintf(cmd->pool, "RateLimitHeaders: '%s' is not "
                            "accepted; expected off, legacy, ietf or both",
                            arg);
    }
    dc->headers = how;
    return NULL;
}

const char *rrl_config_cmd_exempt(cmd_parms *cmd, void *dcfg, const char *arg)
{
    rrl_dir_conf_t *dc = dcfg;
    apr_ipsubnet_t *sub;
    char *ip = apr_pstrdup(cmd->temp_pool, arg), *mask;
    apr_status_t rv;
    const char *err = rrl_config_context(cmd, 0);

    if (err) {
        return err;
    }
    if ((mask = strchr(ip, '/')) != NULL) {
        *mask++ = '\0';
    }
    if (!*ip || (mask && !*mask)
        || (rv = apr_ipsubnet_create(&sub, ip, mask && strcmp(mask, "0")
                                               ? mask : NULL, cmd->pool))
           != APR_SUCCESS) {
        return apr_psprintf(cmd->pool, "RateLimitExempt: '%s' is not an IP "
                            "address or CIDR; expected forms such as "
                            "192.0.2.7, 10.0.0.0/8, 2001:db8::/32 or "
                            "0.0.0.0/0", arg);
    }
    if (!dc->exempt) {
        dc->exempt = apr_array_make(cmd->pool, 2, sizeof(apr_ipsubnet_t *));
    }
    if (mask && strcmp(mask, "0") == 0) {
        /* APR takes no /0: every address of the family is its two
         * halves, tested as APR tests any range of that family */
        int v6 = strchr(ip, ':') != NULL;

        if (apr_ipsubnet_create(&sub, v6 ? "::" : "0.0.0.0", "1",
                                cmd->pool) != APR_SUCCESS) {
            return "RateLimitExempt: cannot make the first half of /0";
        }
        APR_ARRAY_PUSH(dc->exempt, apr_ipsubnet_t *) = sub;
        if (apr_ipsubnet_create(&sub, v6 ? "8000::" : "128.0.0.0", "1",
                                cmd->pool) != APR_SUCCESS) {
            return "RateLimitExempt: cannot make the second half of /0";
        }
    }
    APR_ARRAY_PUSH(dc->exempt, apr_ipsubnet_t *) = sub;
    return NULL;
}

const char *rrl_config_cmd_key_prefix(cmd_parms *cmd, void *dummy,
                                      const char *arg)
{
    rrl_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config,
                                              &redis_ratelimit_module);
    const char *c, *err = rrl_config_context(cmd, 0);

    (void)dummy;
    if (err) {
        return err;
    }
    for (c = arg; *c; c++) {
        if (*c <= ' ' || *c > '~') {
            break;
        }
    }
    if (*c || c - arg > 64) {
        return apr_psprintf(cmd->pool, "RateLimitKeyPrefix: '%s' is not "
                            "accepted; expected up to 64 printable ASCII "
                            "characters without spaces, such as rl: or "
                            "shop:rl:", arg);
    }
    sc->key_prefix = arg;
    return NULL;
}

const char *rrl_config_cmd_deny_cache(cmd_parms *cmd, void *dummy, int on)
{
    rrl_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config,
                                              &redis_ratelimit_module);

    const char *err = rrl_config_context(cmd, 0);

    (void)dummy;
    if (err) {
        return err;
    }
    sc->deny_cache = on;
    return NULL;
}

const char *rrl_config_cmd_local_size(cmd_parms *cmd, void *dummy,
                                      const char *arg)
{
    rrl_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config,
                                              &redis_ratelimit_module);
    const char *err = rrl_config_context(cmd, GLOBAL_ONLY);
    char *num = apr_pstrdup(cmd->temp_pool, arg);
    apr_size_t len = strlen(num);
    apr_int64_t v, mult = 1;

    (void)dummy;
    if (err) {
        return err;
    }
    if (len > 1) {
        switch (apr_tolower(num[len - 1])) {
        case 'k': mult = 1024; break;
        case 'm': mult = 1024 * 1024; break;
        case 'g': mult = 1024 * 1024 * 1024; break;
        }
        if (mult > 1) {
            num[len - 1] = '\0';
        }
    }
    if (!rrl_util_parse_int(num, 1, RRL_MAX_LOCAL_SIZE, &v)
        || v > RRL_MAX_LOCAL_SIZE / mult
        || v * mult < RRL_MIN_LOCAL_SIZE) {
        return apr_psprintf(cmd->pool, "RateLimitLocalSize: '%s' is not "
                            "accepted; expected a size in bytes from 64K to "
                            "64G, with an optional K, M or G suffix, such as "
                            "8M", arg);
    }
    sc->local_size = v * mult;
    return NULL;
}

const char *rrl_config_cmd_redis(cmd_parms *cmd, void *dummy, const char *arg)
{
    rrl_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config,
                                              &redis_ratelimit_module);
    rrl_redis_url_t *u = NULL;
    const char *err = rrl_config_context(cmd, 0);

    (void)dummy;
    if (err) {
        return err;
    }
    if (sc->redis) {
        /* the server config and each virtual host has its own; the
         * second line would silently win */
        return apr_psprintf(cmd->pool, "RateLimitRedis: a second line in "
                            "this %s (the first is at %s:%d); one scope "
                            "keeps its limits in one Redis: remove one of "
                            "them", cmd->server->is_virtual
                            ? "virtual host" : "server config",
                            sc->redis_at->filename, sc->redis_at->line_num);
    }
    sc->redis_at = cmd->directive;
    if (strcasecmp(arg, "off") == 0) {
        sc->redis = &rrl_url_off;
        return NULL;
    }
    if ((err = rrl_url_parse(cmd->pool, arg, &u)) != NULL) {
        return apr_pstrcat(cmd->pool, "RateLimitRedis: ", err, NULL);
    }
    /* TLS files: read now, so that apachectl -t says what is wrong */
    if (u->tls && (err = rrl_tls_check(cmd->temp_pool, u)) != NULL) {
        return apr_psprintf(cmd->pool, "RateLimitRedis: '%s': %s", u->masked,
                            err);
    }
    sc->redis = u;
    return NULL;
}

/* DUR: a number with ms or s (plain: seconds), above 0 and up to max */
const char *rrl_config_parse_duration(cmd_parms *cmd, const char *what,
                                      const char *v,
                                      apr_interval_time_t max,
                                      apr_interval_time_t *out)
{
    apr_interval_time_t t;

    if (!apr_isdigit(*v) || ap_timeout_parameter_parse(v, &t, "s")
        != APR_SUCCESS || t <= 0 || t > max) {
        return apr_psprintf(cmd->pool, "%s: %s is not accepted; expected a "
                            "duration above 0 and up to %" APR_TIME_T_FMT
                            "s, with ms or s, such as 100ms or 2s",
                            cmd->cmd->name, what, apr_time_sec(max));
    }
    *out = t;
    return NULL;
}

const char *rrl_config_cmd_redis_timeout(cmd_parms *cmd, void *dummy,
                                         const char *a1, const char *a2)
{
    rrl_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config,
                                              &redis_ratelimit_module);
    const char *args[2] = { a1, a2 }, *err = rrl_config_context(cmd, 0);
    int i;

    (void)dummy;
    if (err) {
        return err;
    }
    for (i = 0; i < 2 && args[i]; i++) {
        if (strncasecmp(args[i], "connect=", 8) == 0) {
            err = rrl_config_parse_duration(cmd, args[i], args[i] + 8,
                                            RRL_MAX_TIMEOUT,
                                            &sc->connect_timeout);
        }
        else if (strncasecmp(args[i], "command=", 8) == 0) {
            err = rrl_config_parse_duration(cmd, args[i], args[i] + 8,
                                            RRL_MAX_TIMEOUT,
                                            &sc->command_timeout);
        }
        else {
            err = apr_psprintf(cmd->pool, "RateLimitRedisTimeout: '%s' is not "
                               "accepted; expected connect=DUR and/or "
                               "command=DUR, such as connect=100ms "
                               "command=50ms", args[i]);
        }
        if (err) {
            return err;
        }
    }
    return NULL;
}

const char *rrl_config_cmd_redis_pool(cmd_parms *cmd, void *dummy, int argc,
                                      char *const argv[])
{
    rrl_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config,
                                              &redis_ratelimit_module);
    const char *ctx = rrl_config_context(cmd, 0);
    int i;

    (void)dummy;
    if (ctx) {
        return ctx;
    }
    if (argc < 1 || argc > 3) {
        return "RateLimitRedisPool: expected [max=N] [keep=N] [ttl=DUR]";
    }
    for (i = 0; i < argc; i++) {
        apr_int64_t n;
        const char *err;

        if (strncasecmp(argv[i], "max=", 4) == 0) {
            if (!rrl_util_parse_int(argv[i] + 4, 1, RRL_MAX_POOL, &n)) {
                return apr_psprintf(cmd->pool, "RateLimitRedisPool: %s is not "
                                    "accepted; expected max= from 1 to %d "
                                    "connections per child", argv[i],
                                    RRL_MAX_POOL);
            }
            sc->pool_max = (int)n;
        }
        else if (strncasecmp(argv[i], "keep=", 5) == 0) {
            if (!rrl_util_parse_int(argv[i] + 5, 0, RRL_MAX_POOL, &n)) {
                return apr_psprintf(cmd->pool, "RateLimitRedisPool: %s is not "
                                    "accepted; expected keep= from 0 to %d "
                                    "idle connections kept past ttl",
                                    argv[i], RRL_MAX_POOL);
            }
            sc->pool_keep = (int)n;
        }
        else if (strncasecmp(argv[i], "ttl=", 4) == 0) {
            if ((err = rrl_config_parse_duration(
                     cmd, argv[i], argv[i] + 4, apr_time_from_sec(86400),
                     &sc->pool_ttl)) != NULL) {
                return err;
            }
        }
        else {
            return apr_psprintf(cmd->pool, "RateLimitRedisPool: '%s' is not "
                                "accepted; expected max=N, keep=N or "
                                "ttl=DUR", argv[i]);
        }
    }
    if (sc->pool_max != RRL_UNSET && sc->pool_keep != RRL_UNSET
        && sc->pool_keep > sc->pool_max) {
        return "RateLimitRedisPool: keep= cannot be above max=";
    }
    return NULL;
}

/* Some RateLimitOnError local was read (written while parsing, reset in
 * pre_config): where it stands, the local store may decide */
static int rrl_local_named;

void rrl_config_pre_config(void)
{
    rrl_local_named = 0;
}

int rrl_config_local_named(void)
{
    return rrl_local_named;
}

const char *rrl_config_cmd_on_error(cmd_parms *cmd, void *dcfg,
                                    const char *how, const char *opt)
{
    rrl_dir_conf_t *dc = dcfg;
    int i = rrl_util_keyword(rrl_config_on_error_names, how);
    const char *err = rrl_config_context(cmd, 0);

    if (err) {
        return err;
    }
    if (i < 0) {
        return apr_psprintf(cmd->pool, "RateLimitOnError: '%s' is not "
                            "accepted; expected allow, deny or local "
                            "[instances=N]", how);
    }
    dc->on_error = i;
    rrl_local_named |= i == RRL_ONERR_LOCAL;
    if (opt) {
        apr_int64_t n;

        if (i != RRL_ONERR_LOCAL || strncasecmp(opt, "instances=", 10) != 0
            || !rrl_util_parse_int(opt + 10, 1, 10000, &n)) {
            return apr_psprintf(cmd->pool, "RateLimitOnError: '%s' is not "
                                "accepted; only local takes an option, "
                                "instances=N with N from 1 to 10000", opt);
        }
        dc->on_error_instances = (int)n;
    }
    else {
        dc->on_error_instances = 1;
    }
    return NULL;
}
