/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The options of RateLimit and RateLimitConcurrency.
 */

#include "apr_lib.h"
#include "apr_strings.h"

#include <string.h>

#include "rrl_private.h"
#include "rrl_option.h"
#include "rrl_algo.h"
#include "rrl_config.h"
#include "rrl_util.h"

/* Characters allowed in limit names: [A-Za-z0-9_.-] */
int rrl_option_name_char(int c)
{
    return apr_isalnum(c) || c == '_' || c == '.' || c == '-';
}

/* A message about the directive being parsed: "RateLimit: ..." */
const char *rrl_option_err(cmd_parms *cmd, const char *fmt, ...)
{
    va_list ap;
    const char *msg;

    va_start(ap, fmt);
    msg = apr_pvsprintf(cmd->temp_pool, fmt, ap);
    va_end(ap);
    return apr_pstrcat(cmd->pool, cmd->cmd->name, ": ", msg, NULL);
}

/* RateLimit's options, each parsed into the limit by its function */
typedef const char *(*rrl_option_fn)(cmd_parms *cmd, rrl_limit_t *l,
                                     const char *val);

/* burst= and cost=: a number of units */
static const char *rrl_opt_units(cmd_parms *cmd, const char *opt,
                                 const char *val, apr_int64_t *out)
{
    if (!rrl_util_parse_int(val, 1, RRL_MAX_UNITS, out)) {
        return rrl_option_err(cmd, "%s=%s is not accepted; "
                             "expected a positive whole number", opt, val);
    }
    return NULL;
}

static const char *rrl_opt_burst(cmd_parms *cmd, rrl_limit_t *l,
                                 const char *val)
{
    return rrl_opt_units(cmd, "burst", val, &l->p.burst);
}

static const char *rrl_opt_cost(cmd_parms *cmd, rrl_limit_t *l,
                                const char *val)
{
    return rrl_opt_units(cmd, "cost", val, &l->cost);
}

static const char *rrl_opt_key(cmd_parms *cmd, rrl_limit_t *l,
                               const char *val)
{
    const char *experr = NULL;

    l->key_text = apr_pstrdup(cmd->pool, val);
    l->key = ap_expr_parse_cmd(cmd, l->key_text, AP_EXPR_FLAG_STRING_RESULT,
                               &experr, NULL);
    if (experr) {
        return rrl_option_err(cmd, "key=%s does not parse as "
                             "an expression (%s); expected a string "
                             "expression such as %%{HTTP:X-Api-Key}", val,
                             experr);
    }
    if (strcmp(val, "%{REMOTE_ADDR}") == 0) {
        l->key = NULL;          /* the client address, fast path */
    }
    else if (strncmp(val, "%{HTTP:", 7) == 0) {
        /* one request header, as ap_expr would read it, without its
         * evaluator */
        apr_size_t hl = strcspn(val + 7, "}%{\\\"' \t");

        if (hl > 0 && strcmp(val + 7 + hl, "}") == 0) {
            l->key_header = apr_pstrndup(cmd->pool, val + 7, hl);
        }
    }
    return NULL;
}

static const char *rrl_opt_name(cmd_parms *cmd, rrl_limit_t *l,
                                const char *val)
{
    const char *c;

    for (c = val; *c && rrl_option_name_char(*c); c++)
        ;
    if (*c || c - val > RRL_NAME_MAX) {
        return rrl_option_err(cmd, "name=%s is not accepted; "
                             "expected 1 to 64 of A-Z a-z 0-9 _ . -", val);
    }
    l->name = apr_pstrdup(cmd->pool, val);
    return NULL;
}

static const char *rrl_opt_algorithm(cmd_parms *cmd, rrl_limit_t *l,
                                     const char *val)
{
    int a = rrl_util_keyword(rrl_algo_names, val);

    if (a < 0 || a == RRL_ALG_CONCURRENCY) {
        return rrl_option_err(cmd, "algorithm=%s is not "
                             "known; expected gcra, token-bucket, "
                             "fixed-window or sliding-window", val);
    }
    l->p.algorithm = a;
    return NULL;
}

static const char *rrl_opt_phase(cmd_parms *cmd, rrl_limit_t *l,
                                 const char *val)
{
    static const char *const phases[] = { "access", "auth", NULL };
    int ph = rrl_util_keyword(phases, val);   /* in rrl_phase_e order */

    if (ph < 0) {
        return rrl_option_err(cmd, "phase=%s is not known; "
                             "expected access or auth", val);
    }
    l->phase = ph;
    return NULL;
}

static const char *rrl_opt_ipv6_prefix(cmd_parms *cmd, rrl_limit_t *l,
                                       const char *val)
{
    apr_int64_t bits;

    if (!rrl_util_parse_int(val, 1, 128, &bits)) {
        return rrl_option_err(cmd, "ipv6-prefix=%s is not "
                             "accepted; expected a prefix length from 1 to "
                             "128", val);
    }
    l->ipv6_prefix = (int)bits;
    return NULL;
}

static const char *rrl_opt_count(cmd_parms *cmd, rrl_limit_t *l,
                                 const char *val)
{
    char *list = apr_pstrdup(cmd->temp_pool, val), *tok, *state;

    l->statuses = apr_palloc(cmd->pool, sizeof(int) * strlen(val));
    for (tok = apr_strtok(list, ",", &state); tok;
         tok = apr_strtok(NULL, ",", &state)) {
        apr_int64_t st;

        if (!rrl_util_parse_int(tok, 100, 599, &st)) {
            return rrl_option_err(cmd, "count=%s is not "
                                 "accepted; expected HTTP status codes from "
                                 "100 to 599 separated by commas, such as "
                                 "count=401,403", val);
        }
        l->statuses[l->nstatuses++] = (int)st;
    }
    if (!l->nstatuses) {
        return rrl_option_err(cmd, "count=%s names no "
                             "status; expected count=401,403", val);
    }
    return NULL;
}

/* plans=redis, or plans=FILE (relative to ServerRoot); the file is read
 * and checked in check_config (rrl_plan_file.c), where every limit that
 * uses it is known */
static const char *rrl_opt_plans(cmd_parms *cmd, rrl_limit_t *l,
                                 const char *val)
{
    if (strcasecmp(val, "redis") == 0) {
        l->plans = RRL_PLANS_REDIS;
        return NULL;
    }
    l->plans = RRL_PLANS_FILE;
    l->plans_path = ap_server_root_relative(cmd->pool, val);
    if (!l->plans_path) {
        return rrl_option_err(cmd, "plans=%s is not accepted; expected "
                             "redis or the path of a plans file", val);
    }
    return NULL;
}

/* lease= of RateLimitConcurrency: from 1 s to a day */
static const char *rrl_opt_lease(cmd_parms *cmd, rrl_limit_t *l,
                                 const char *val)
{
    apr_interval_time_t t;
    const char *err = rrl_config_parse_duration(
        cmd, apr_pstrcat(cmd->temp_pool, "lease=", val, NULL), val,
        apr_time_from_sec(86400), &t);

    if (err) {
        return err;
    }
    if (t < apr_time_from_sec(1)) {
        return rrl_option_err(cmd, "lease=%s is not accepted; a lease is "
                             "at least 1s (a slot lives that long after "
                             "its request was last heard of)", val);
    }
    l->p.period = t;
    l->lease_given = 1;
    return NULL;
}

static const struct {
    const char *name;
    rrl_option_fn parse;
} rrl_options[RRL_OPT_MAX + 1] = {
    [RRL_OPT_BURST] = { "burst", rrl_opt_burst },
    [RRL_OPT_KEY] = { "key", rrl_opt_key },
    [RRL_OPT_NAME] = { "name", rrl_opt_name },
    [RRL_OPT_ALGORITHM] = { "algorithm", rrl_opt_algorithm },
    [RRL_OPT_COST] = { "cost", rrl_opt_cost },
    [RRL_OPT_PHASE] = { "phase", rrl_opt_phase },
    [RRL_OPT_IPV6_PREFIX] = { "ipv6-prefix", rrl_opt_ipv6_prefix },
    [RRL_OPT_COUNT] = { "count", rrl_opt_count },
    [RRL_OPT_PLANS] = { "plans", rrl_opt_plans },
    [RRL_OPT_LEASE] = { "lease", rrl_opt_lease },
    [RRL_OPT_MAX] = { NULL, NULL }
};

/* "burst, key, ..., count": the options of a directive, for messages */
static const char *rrl_option_list(apr_pool_t *p, unsigned accepted)
{
    const char *list = NULL;
    int i;

    for (i = 0; i < RRL_OPT_MAX; i++) {
        if (accepted & RRL_OPT(i)) {
            list = list ? apr_pstrcat(p, list, ", ", rrl_options[i].name,
                                      NULL)
                        : rrl_options[i].name;
        }
    }
    return list;
}

/* NAME=VALUE options after the RATE into l, of those accepted; *given: a
 * bit per option */
const char *rrl_option_parse(cmd_parms *cmd, rrl_limit_t *l, int argc,
                             char *const argv[], unsigned accepted,
                             unsigned *given)
{
    int i, o;

    *given = 0;
    for (i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '='), *err;
        char *opt;

        if (!eq || eq == argv[i] || !eq[1]) {
            return rrl_option_err(cmd, "'%s' is not an "
                                 "option; expected name=value with one of "
                                 "%s", argv[i],
                                 rrl_option_list(cmd->pool, accepted));
        }
        opt = apr_pstrndup(cmd->temp_pool, argv[i], eq - argv[i]);
        ap_str_tolower(opt);
        for (o = 0; rrl_options[o].name; o++) {
            if (strcmp(opt, rrl_options[o].name) == 0) {
                break;
            }
        }
        if (!rrl_options[o].name || !(accepted & RRL_OPT(o))) {
            return rrl_option_err(cmd, "unknown option '%s'; "
                                 "accepted: %s", opt,
                                 rrl_option_list(cmd->pool, accepted));
        }
        if (*given & (1u << o)) {
            return rrl_option_err(cmd, "option %s= is given "
                                 "twice", opt);
        }
        *given |= 1u << o;
        if ((err = rrl_options[o].parse(cmd, l, eq + 1)) != NULL) {
            return err;
        }
    }
    return NULL;
}

