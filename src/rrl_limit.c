/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * RateLimit and RateLimitConcurrency: the directives, default names, checks
 * across sections, texts.
 */

#include "apr_lib.h"
#include "apr_hash.h"
#include "apr_strings.h"

#include "ap_mpm.h"

#include <string.h>

#include "rrl_private.h"
#include "rrl_limit.h"
#include "rrl_option.h"
#include "rrl_algo.h"
#include "rrl_config.h"
#include "rrl_counters.h"
#include "rrl_util.h"

/* Written while parsing and in pre/post_config only */
static apr_array_header_t *rrl_all_limits;   /* every limit parsed */
/* rrl_limit_t *: the first of each (name, scope) pair, in the order of the
 * configuration; a limit's pair is its index here */
static apr_array_header_t *rrl_pairs;

/* "/api/v1 login" -> "api-v1-login" */
static char *rrl_slug(apr_pool_t *p, const char *s)
{
    char *out = apr_palloc(p, strlen(s) + 1), *o = out;

    for (; *s; s++) {
        if (rrl_option_name_char(*s) && *s != '-') {
            *o++ = *s;
        }
        else if (o > out && o[-1] != '-') {
            *o++ = '-';
        }
    }
    while (o > out && o[-1] == '-') {
        o--;
    }
    *o = '\0';
    return out;
}

/*
 * The default name of a limit: where it stands, so that instances sharing
 * one configuration agree on it.  "server-1" and "vhost-1" outside any
 * section; "location-login-1" in <Location "/login">; an <If> contributes a
 * hash of its condition; the number counts the unnamed limits of that
 * section, RateLimitConcurrency's apart ("location-login-concurrency-1"),
 * so that adding one renames no RateLimit.  Too long: the innermost
 * section's kind and a hash.
 */
static int rrl_names_place(const char *section)
{
    static const char *const silent[] = {
        "<VirtualHost", "<IfModule", "<IfDefine", "<IfVersion", "<IfFile",
        "<IfDirective", "<IfSection", "<Macro", NULL
    };

    /* the silent ones say nothing of where a request goes */
    return section[0] == '<' && rrl_util_keyword(silent, section) < 0;
}

static const char *rrl_default_name(cmd_parms *cmd, const char *kind_of,
                                    int ordinal)
{
    const ap_directive_t *d;
    const char *chain = "", *kind = NULL;
    char *name;

    for (d = cmd->directive->parent; d; d = d->parent) {
        const char *dn = d->directive, *part;
        char *arg;
        apr_size_t len;

        if (!rrl_names_place(dn)) {
            continue;   /* <IfModule> and friends say nothing of where */
        }
        arg = apr_pstrdup(cmd->temp_pool, d->args ? d->args : "");
        len = strlen(arg);
        if (len && arg[len - 1] == '>') {
            arg[len - 1] = '\0';
        }
        part = apr_pstrdup(cmd->temp_pool, dn + 1);
        ap_str_tolower((char *)part);
        if (!kind) {
            kind = part;
        }
        if (strncmp(part, "if", 2) == 0 || strcmp(part, "elseif") == 0
            || strcmp(part, "else") == 0) {
            const char *h = rrl_util_sha1_hex(cmd->temp_pool, arg,
                                              strlen(arg));

            part = apr_pstrcat(cmd->temp_pool, part, "-",
                               apr_pstrndup(cmd->temp_pool, h, 8), NULL);
        }
        else if (*rrl_slug(cmd->temp_pool, arg)) {
            part = apr_pstrcat(cmd->temp_pool, part, "-",
                               rrl_slug(cmd->temp_pool, arg), NULL);
        }
        chain = *chain ? apr_pstrcat(cmd->temp_pool, part, "-", chain, NULL)
                       : part;
    }
    if (!*chain) {
        chain = cmd->server->is_virtual ? "vhost" : "server";
    }
    name = apr_psprintf(cmd->pool, "%s-%s%d", chain, kind_of, ordinal);
    if (strlen(name) > RRL_NAME_MAX) {
        name = apr_psprintf(cmd->pool, "%s-%.16s-%s%d", kind,
                            rrl_util_sha1_hex(cmd->temp_pool, chain,
                                              strlen(chain)), kind_of,
                            ordinal);
    }
    return name;
}

/* Does the section of this directive say SetHandler redis-ratelimit-status?
 * The status page is limited only by limits written there. */
static int rrl_beside_status_handler(cmd_parms *cmd)
{
    const ap_directive_t *d;

    if (!cmd->directive->parent) {
        return 0;
    }
    for (d = cmd->directive->parent->first_child; d; d = d->next) {
        if (strcasecmp(d->directive, "SetHandler") == 0 && d->args) {
            char *h = apr_pstrdup(cmd->temp_pool, d->args);
            apr_size_t len = strlen(h);

            if (len >= 2 && (h[0] == '"' || h[0] == '\'')
                && h[len - 1] == h[0]) {
                h[len - 1] = '\0';
                h++;
            }
            if (strcasecmp(h, RRL_STATUS_HANDLER) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

/* The new limit l of a section: one name in one section is one limit */
static const char *rrl_limit_add(cmd_parms *cmd, rrl_dir_conf_t *dc,
                                 rrl_limit_t *l)
{
    int i;

    if (dc->limits) {
        for (i = 0; i < dc->limits->nelts; i++) {
            const rrl_limit_t *o = APR_ARRAY_IDX(dc->limits, i,
                                                 rrl_limit_t *);
            if (strcmp(o->name, l->name) == 0) {
                return rrl_option_err(cmd, "name=%s is "
                                     "already used by the limit on line %u "
                                     "of this section; give each limit its "
                                     "own name", l->name, o->line);
            }
        }
    }
    else {
        dc->limits = apr_array_make(cmd->pool, 2, sizeof(rrl_limit_t *));
    }
    APR_ARRAY_PUSH(dc->limits, rrl_limit_t *) = l;
    if (rrl_all_limits) {
        APR_ARRAY_PUSH(rrl_all_limits, rrl_limit_t *) = l;
    }
    return NULL;
}

/* A new limit of the directive being parsed, with its defaults */
static rrl_limit_t *rrl_limit_new(cmd_parms *cmd, const char *text)
{
    rrl_limit_t *l = apr_pcalloc(cmd->pool, sizeof(*l));

    l->directive = cmd->cmd->name;
    l->rate_text = text;
    l->cost = 1;
    l->phase = RRL_PHASE_ACCESS;
    l->ipv6_prefix = 64;
    l->server = cmd->server;
    l->in_vhost = cmd->server->is_virtual;
    l->file = cmd->directive->filename;
    l->line = cmd->directive->line_num;
    l->p.algorithm = RRL_ALG_GCRA;
    l->for_status = rrl_beside_status_handler(cmd);
    return l;
}

/* What RateLimit and RateLimitConcurrency check last: a key that names
 * the user decides after authentication; the name; the section's list */
static const char *rrl_limit_finish(cmd_parms *cmd, rrl_dir_conf_t *dc,
                                    rrl_limit_t *l, unsigned given)
{
    if (l->key_text && ap_strstr_c(l->key_text, "REMOTE_USER")) {
        if (!(given & RRL_OPT(RRL_OPT_PHASE))) {
            l->phase = RRL_PHASE_AUTH;     /* the user is known only then */
        }
        else if (l->phase == RRL_PHASE_ACCESS) {
            return rrl_option_err(cmd, "key=%s with phase=access is never "
                                 "known: the user is authenticated after "
                                 "the access phase, so the limit would "
                                 "never count; use phase=auth (the default "
                                 "for a key that names REMOTE_USER)",
                                 l->key_text);
        }
    }
    if (!l->name) {
        l->name = l->p.algorithm == RRL_ALG_CONCURRENCY
                  ? rrl_default_name(cmd, "concurrency-",
                                     ++dc->unnamed_concurrency)
                  : rrl_default_name(cmd, "", ++dc->unnamed);
        l->auto_named = 1;
    }
    return rrl_limit_add(cmd, dc, l);
}

/* RateLimit RATE [option=value ...] | RateLimit off */
const char *rrl_limit_cmd(cmd_parms *cmd, void *dcfg, int argc,
                          char *const argv[])
{
    rrl_dir_conf_t *dc = dcfg;
    rrl_limit_t *l;
    const char *err;
    unsigned given;

    if ((err = rrl_config_context(cmd, NOT_IN_LIMIT)) != NULL) {
        return err;
    }
    if (argc == 0) {
        return "RateLimit: expected RATE [option=value ...] or 'off'";
    }
    if (strcasecmp(argv[0], "off") == 0) {
        if (argc > 1) {
            return "RateLimit off takes no options";
        }
        dc->off = 1;
        dc->limits = NULL;     /* nor does anything before it here apply */
        return NULL;
    }

    l = rrl_limit_new(cmd, argv[0]);
    if ((err = rrl_algo_parse_rate(cmd->temp_pool, argv[0], &l->p.count,
                                   &l->p.period)) != NULL) {
        return apr_pstrcat(cmd->pool, "RateLimit: ", err, NULL);
    }
    l->p.burst = l->p.count;
    if ((err = rrl_option_parse(cmd, l, argc - 1, argv + 1, RRL_OPTS_RATE,
                                 &given)) != NULL) {
        return err;
    }
    l->p.capped = l->plans != RRL_PLANS_NONE;
    if ((err = rrl_algo_check_params(cmd->pool, l->rate_text, &l->p, l->cost,
                                     given & RRL_OPT(RRL_OPT_BURST)))
        != NULL) {
        return apr_pstrcat(cmd->pool, "RateLimit: ", err, NULL);
    }
    return rrl_limit_finish(cmd, dc, l, given);
}

/* The most requests in flight a concurrency limit counts (the local
 * store keeps a count in 21 bits) */
#define RRL_MAX_CONCURRENCY 1000000

/* RateLimitConcurrency N [key=EXPR] [name=NAME] [lease=DUR] ...: at most N
 * requests of a key in flight.  A limit of algorithm concurrency: count
 * N, period its lease (set in check_config when not given: Apache's
 * Timeout for the server, at least 60 s) */
const char *rrl_limit_concurrency_cmd(cmd_parms *cmd, void *dcfg, int argc,
                                      char *const argv[])
{
    rrl_dir_conf_t *dc = dcfg;
    rrl_limit_t *l;
    const char *err;
    unsigned given;

    if ((err = rrl_config_context(cmd, NOT_IN_LIMIT)) != NULL) {
        return err;
    }
    if (argc == 0) {
        return "RateLimitConcurrency: expected N [option=value ...], the "
               "most requests of a key served at once";
    }
    l = rrl_limit_new(cmd, argv[0]);
    l->p.algorithm = RRL_ALG_CONCURRENCY;
    if (!rrl_util_parse_int(argv[0], 1, RRL_MAX_CONCURRENCY, &l->p.count)) {
        return rrl_option_err(cmd, "'%s' is not accepted; expected the most "
                             "requests of a key in flight at once, a whole "
                             "number from 1 to %d, such as 10", argv[0],
                             RRL_MAX_CONCURRENCY);
    }
    l->p.burst = l->p.count;
    l->p.unit = 1;
    if ((err = rrl_option_parse(cmd, l, argc - 1, argv + 1,
                                 RRL_OPTS_CONCURRENCY, &given)) != NULL) {
        return err;
    }
    if (l->lease_given) {
        l->p.interval = (l->p.period + 1) / 2;
    }
    return rrl_limit_finish(cmd, dc, l, given);
}

void rrl_limit_pre_config(apr_pool_t *pconf)
{
    rrl_all_limits = apr_array_make(pconf, 16, sizeof(rrl_limit_t *));
}

apr_array_header_t *rrl_limit_all(void)
{
    return rrl_all_limits;
}

/*
 * Checks across sections, where apachectl -t still runs: one name in one
 * scope (one virtual host's name, or the whole server) is one limit, and
 * its keys are shared by every section that uses it, so its settings must
 * agree.
 */
static int rrl_same_settings(const rrl_limit_t *a, const rrl_limit_t *b)
{
    int i;

    if (a->p.algorithm != b->p.algorithm || a->p.count != b->p.count
        || a->p.period != b->p.period || a->p.burst != b->p.burst
        || a->cost != b->cost || a->phase != b->phase
        || a->ipv6_prefix != b->ipv6_prefix
        || a->nstatuses != b->nstatuses || a->plans != b->plans
        || (a->plans_path && strcmp(a->plans_path, b->plans_path) != 0)
        || (a->key_text == NULL) != (b->key_text == NULL)
        || (a->key_text && strcmp(a->key_text, b->key_text) != 0)) {
        return 0;
    }
    for (i = 0; i < a->nstatuses; i++) {
        if (a->statuses[i] != b->statuses[i]) {
            return 0;
        }
    }
    return 1;
}

int rrl_limit_check_config(apr_pool_t *pconf, apr_pool_t *ptemp)
{
    apr_hash_t *seen = apr_hash_make(ptemp);
    int i, bad = 0;

    for (i = 0; rrl_all_limits && i < rrl_all_limits->nelts; i++) {
        rrl_limit_t *l = APR_ARRAY_IDX(rrl_all_limits, i, rrl_limit_t *);
        const char *id;
        const rrl_limit_t *o;

        if (l->p.algorithm == RRL_ALG_CONCURRENCY && !l->lease_given) {
            /* a live request is heard of at least every Timeout */
            l->p.period = l->server->timeout > RRL_DEFAULT_LEASE
                          ? l->server->timeout : RRL_DEFAULT_LEASE;
            l->p.interval = (l->p.period + 1) / 2;
        }
        l->scope = (l->in_vhost && l->server->server_hostname)
                   ? apr_pstrcat(pconf, l->server->server_hostname, ":",
                                 NULL)
                   : "";
        id = apr_pstrcat(ptemp, l->scope, l->name, NULL);
        o = apr_hash_get(seen, id, APR_HASH_KEY_STRING);
        if (!o) {
            apr_hash_set(seen, id, APR_HASH_KEY_STRING, l);
        }
        else if (!rrl_same_settings(o, l)) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                         RRL_LOGNO(00009) "%s:%u: %s %s name=%s "
                         "differs from the limit of that name at %s:%u%s; "
                         "one name in one %s is one limit, so give them the "
                         "same settings or different names", l->file,
                         l->line, l->directive, l->rate_text, l->name,
                         o->file, o->line,
                         l->auto_named ? " (a default name: add name= to "
                         "tell them apart)" : "",
                         l->in_vhost ? "virtual host" : "server");
            bad = 1;
        }
    }
    return bad ? !OK : OK;
}

/* The virtual host a limit is scoped to: "" outside any */
const char *rrl_limit_vhost(const rrl_limit_t *l)
{
    return l->in_vhost && l->server->server_hostname
           ? l->server->server_hostname : "";
}

/* Each limit's header and variable texts, formatted once; its pair, and
 * the pair's counters on the status page, sized to the configuration */
apr_status_t rrl_limit_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                                   server_rec *s)
{
    int n = rrl_all_limits ? rrl_all_limits->nelts : 0, i;
    apr_hash_t *seen = apr_hash_make(ptemp);
    const char **names, **vhosts;
    rrl_limit_stat_t **stats;
    apr_status_t rv;
    int concurrency = 0;

    rrl_pairs = apr_array_make(pconf, n ? n : 1, sizeof(rrl_limit_t *));
    for (i = 0; i < n; i++) {
        rrl_limit_t *l = APR_ARRAY_IDX(rrl_all_limits, i, rrl_limit_t *);
        const char *id = apr_pstrcat(ptemp, l->scope, l->name, NULL);
        rrl_limit_t *first = apr_hash_get(seen, id, APR_HASH_KEY_STRING);

        l->count_text = apr_psprintf(pconf, "%" APR_INT64_T_FMT, l->p.count);
        l->policy = apr_psprintf(pconf, "\"%s\";q=%" APR_INT64_T_FMT ";w=%"
                                 APR_INT64_T_FMT, l->name, l->p.count,
                                 l->p.period / RRL_USEC_PER_SEC);
        l->ietf_prefix = apr_psprintf(pconf, "\"%s\";r=", l->name);
        if (first) {
            l->pair = first->pair;
        }
        else {
            l->pair = rrl_pairs->nelts;
            APR_ARRAY_PUSH(rrl_pairs, rrl_limit_t *) = l;
            apr_hash_set(seen, id, APR_HASH_KEY_STRING, l);
        }
    }
    n = rrl_pairs->nelts;
    names = apr_palloc(ptemp, sizeof(*names) * (n + 1));
    vhosts = apr_palloc(ptemp, sizeof(*vhosts) * (n + 1));
    stats = apr_palloc(ptemp, sizeof(*stats) * (n + 1));
    for (i = 0; i < n; i++) {
        const rrl_limit_t *l = APR_ARRAY_IDX(rrl_pairs, i, rrl_limit_t *);

        names[i] = l->name;
        vhosts[i] = rrl_limit_vhost(l);
    }
    if ((rv = rrl_counters_limits(s, ptemp, n, names, vhosts, stats))
        != APR_SUCCESS) {
        return rv;
    }
    for (i = 0; rrl_all_limits && i < rrl_all_limits->nelts; i++) {
        rrl_limit_t *l = APR_ARRAY_IDX(rrl_all_limits, i, rrl_limit_t *);

        l->stat = stats[l->pair];
        concurrency |= l->p.algorithm == RRL_ALG_CONCURRENCY;
    }
    if (concurrency) {
        /* a hold per request in flight: the MPM's threads, twice over
         * (HTTP/2 workers, a generation going after a graceful restart) */
        int daemons = 0, threads = 0;

        ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &daemons);
        ap_mpm_query(AP_MPMQ_HARD_LIMIT_THREADS, &threads);
        return rrl_counters_holds_create(
            s, 2 * (apr_size_t)(daemons > 0 ? daemons : 1)
               * (apr_size_t)(threads > 0 ? threads : 1) + 256);
    }
    return APR_SUCCESS;
}

/* The first limit of each (name, scope) pair, in configuration order */
const apr_array_header_t *rrl_limit_pairs(void)
{
    return rrl_pairs;
}
