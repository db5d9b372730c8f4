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
 * arithmetic on microseconds, identical in the local store (rrl_algo below)
 * and in the Redis script (lua/ratelimit.lua).
 */

#include "apr_strings.h"
#include "apr_lib.h"
#include "apr_shm.h"
#include "apr_global_mutex.h"
#include "apr_sha1.h"
#include "apr_md5.h"
#include "apr_network_io.h"

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_main.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_expr.h"
#include "util_mutex.h"

#include <arpa/inet.h>
#include <string.h>

#define RRL_VERSION "0.1.0"

/* Every message at DEBUG and above has its own number (docs/log-messages.md) */
#define RRL_LOGNO(n) "RRL" #n ": "

#define RRL_UNSET (-1)

/* Names the specification fixes */
#define RRL_ENV_RESULT     "RATELIMIT_RESULT"
#define RRL_ENV_NAME       "RATELIMIT_NAME"
#define RRL_ENV_LIMIT      "RATELIMIT_LIMIT"
#define RRL_ENV_REMAINING  "RATELIMIT_REMAINING"
#define RRL_HDR_LIMIT      "X-RateLimit-Limit"
#define RRL_HDR_REMAINING  "X-RateLimit-Remaining"
#define RRL_HDR_RESET      "X-RateLimit-Reset"
#define RRL_HDR_POLICY     "RateLimit-Policy"
#define RRL_HDR_RATELIMIT  "RateLimit"
#define RRL_MUTEX_TYPE     "redis-ratelimit-store"
#define RRL_DEFAULT_PREFIX "rl:"

#define RRL_USEC_PER_SEC   APR_INT64_C(1000000)
#define RRL_MAX_PERIOD     (APR_INT64_C(366) * 86400 * RRL_USEC_PER_SEC)
/* Everything the algorithms compute stays below 2^53, so that Lua's
 * doubles in Redis hold it exactly: a full bucket refills in at most 2^50 us
 * (35 years), sliding-window products stay below 2^52. */
#define RRL_MAX_REFILL     (APR_INT64_C(1) << 50)
#define RRL_MAX_PRODUCT    (APR_INT64_C(1) << 52)
#define RRL_KEY_MAX        64      /* longer key values are hashed */
#define RRL_NAME_MAX       64
#define RRL_DEFAULT_LOCAL_SIZE (8 * 1024 * 1024)
#define RRL_MIN_LOCAL_SIZE (64 * 1024)
#define RRL_MAX_LOCAL_SIZE (APR_INT64_C(64) * 1024 * 1024 * 1024)

module AP_MODULE_DECLARE_DATA redis_ratelimit_module;

/* ---- types ---- */

typedef enum {
    RRL_ALG_GCRA = 0,
    RRL_ALG_TOKEN_BUCKET,
    RRL_ALG_FIXED_WINDOW,
    RRL_ALG_SLIDING_WINDOW
} rrl_alg_e;

static const char *const rrl_alg_names[] = {
    "gcra", "token-bucket", "fixed-window", "sliding-window", NULL
};

typedef enum { RRL_PHASE_ACCESS = 0, RRL_PHASE_AUTH } rrl_phase_e;

/* What one decision does with one limit */
typedef enum {
    RRL_MODE_SPEND = 0,   /* check, and spend when every limit allows */
    RRL_MODE_CHECK,       /* check only (count= limits before they run) */
    RRL_MODE_FORCE        /* spend, never below empty (count= at log time) */
} rrl_mode_e;

typedef enum { RRL_ENFORCE = 0, RRL_DRY_RUN } rrl_run_mode_e;

typedef enum {
    RRL_HEADERS_OFF = 0,
    RRL_HEADERS_LEGACY,
    RRL_HEADERS_IETF,
    RRL_HEADERS_BOTH
} rrl_headers_e;

/* RATELIMIT_RESULT values */
typedef enum {
    RRL_RES_NONE = 0,
    RRL_RES_ALLOWED,
    RRL_RES_DENIED,
    RRL_RES_EXEMPT,
    RRL_RES_DRY_RUN_DENIED,
    RRL_RES_FALLBACK_ALLOWED,
    RRL_RES_FALLBACK_DENIED,
    RRL_RES_LOCAL_ALLOWED,
    RRL_RES_LOCAL_DENIED
} rrl_result_e;

static const char *const rrl_result_names[] = {
    "", "allowed", "denied", "exempt", "dry-run-denied",
    "fallback-allowed", "fallback-denied", "local-allowed", "local-denied"
};

/* The arithmetic of a limit, as both stores use it */
typedef struct {
    rrl_alg_e algorithm;
    apr_int64_t count;      /* N of N/PERIOD */
    apr_int64_t period;     /* PERIOD in microseconds (whole seconds) */
    apr_int64_t burst;      /* instantaneous capacity (gcra, token-bucket) */
    apr_int64_t interval;   /* ceil(period / count): time one unit refills */
    apr_int64_t unit;       /* sliding-window: granularity of elapsed time */
} rrl_params_t;

typedef struct rrl_limit_t {
    const char *name;
    int auto_named;             /* name derived from where it stands */
    const char *rate_text;      /* RATE as written */
    rrl_params_t p;
    apr_int64_t cost;
    rrl_phase_e phase;
    int ipv6_prefix;
    const char *key_text;       /* NULL: the client address */
    ap_expr_info_t *key;        /* NULL: the client address */
    int *statuses;              /* count=: spend only on these */
    int nstatuses;
    server_rec *server;         /* where it was defined */
    int in_vhost;
    const char *scope;          /* "VHOST:" or "", set in check_config */
    const char *file;
    unsigned line;
} rrl_limit_t;

typedef struct {
    apr_array_header_t *limits;   /* rrl_limit_t *, this section's own */
    int off;                      /* "RateLimit off" drops what's inherited */
    int unnamed;                  /* unnamed limits so far (default names) */
    int mode;
    int status;
    int headers;
    apr_array_header_t *exempt;   /* apr_ipsubnet_t * */
} rrl_dir_conf_t;

typedef struct {
    const char *key_prefix;
    int deny_cache;
    apr_int64_t local_size;       /* main server only */
} rrl_srv_conf_t;

/* One limit being decided for one request */
typedef struct {
    const rrl_limit_t *limit;
    const rrl_params_t *p;
    const char *key;              /* full store key */
    apr_size_t keylen;
    apr_int64_t cost;
    rrl_mode_e mode;
    /* outcome */
    int allowed;
    apr_int64_t remaining;        /* units left right now */
    apr_int64_t reset;            /* us until remaining is back at its max */
    apr_int64_t retry;            /* us until this request would be allowed */
} rrl_item_t;

/* What the algorithms compute besides the answer */
typedef struct {
    int allowed;
    apr_int64_t remaining, reset, retry;
    int write;                    /* store next[] for ttl us */
    apr_int64_t next[3];
    apr_int64_t ttl;
} rrl_outcome_t;

/* Per-request state, kept on the initial request */
typedef struct {
    int exempt_checked;
    int exempt;
    rrl_result_e result;
    int denied;
    const rrl_limit_t *shown;     /* limit whose headers are out */
    apr_int64_t shown_remaining;
    apr_array_header_t *pending;  /* rrl_item_t: count= spends at log time */
} rrl_req_t;

/* ---- the local store: a bounded table in shared memory ---- */

/* 8-way buckets of fixed slots; when a bucket is full, the slot that
 * expires first gives way.  A slot holds the state of one key. */
#define RRL_WAYS 8
#define RRL_SHM_MAGIC 0x52524c31u      /* "RRL1" */

typedef struct {
    apr_uint64_t h[2];            /* keyed hash of the store key */
    apr_int64_t expires;          /* us since the epoch; 0: free */
    apr_int64_t v[3];             /* algorithm state */
} rrl_slot_t;

typedef struct {
    apr_uint32_t magic;
    apr_uint32_t nbuckets;
    unsigned char salt[16];
    apr_uint64_t evictions;
    rrl_slot_t slots[1];
} rrl_table_t;

/* Lives in the process pool so that the store survives graceful restarts */
typedef struct {
    apr_shm_t *shm;
    apr_global_mutex_t *mutex;
    const char *mutex_file;
    apr_size_t size;
    rrl_table_t *table;
} rrl_store_t;

/* Written in pre_config, while parsing and in post_config/child_init only */
static rrl_store_t *rrl_store;
static apr_array_header_t *rrl_all_limits;   /* every limit parsed */

/* ---- configuration: create, merge, accessors ---- */

static void *rrl_create_dir_conf(apr_pool_t *p, char *dir)
{
    rrl_dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

    (void)dir;
    dc->mode = RRL_UNSET;
    dc->status = RRL_UNSET;
    dc->headers = RRL_UNSET;
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

static void *rrl_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
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
    /* exemptions add up too: an exempt monitor stays exempt everywhere */
    if (base->exempt && add->exempt) {
        n->exempt = apr_array_append(p, base->exempt, add->exempt);
    }
    else {
        n->exempt = add->exempt ? add->exempt : base->exempt;
    }
    return n;
}

static void *rrl_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    rrl_srv_conf_t *sc = apr_pcalloc(p, sizeof(*sc));

    (void)s;
    sc->deny_cache = RRL_UNSET;
    sc->local_size = RRL_UNSET;
    return sc;
}

static void *rrl_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    const rrl_srv_conf_t *base = basev, *add = addv;
    rrl_srv_conf_t *n = apr_pcalloc(p, sizeof(*n));

    n->key_prefix = add->key_prefix ? add->key_prefix : base->key_prefix;
    RRL_MERGE_INT(deny_cache);
    n->local_size = base->local_size;    /* global only */
    return n;
}

static int rrl_dc_mode(const rrl_dir_conf_t *dc)
{
    return dc->mode != RRL_UNSET ? dc->mode : RRL_ENFORCE;
}

static int rrl_dc_status(const rrl_dir_conf_t *dc)
{
    return dc->status != RRL_UNSET ? dc->status : HTTP_TOO_MANY_REQUESTS;
}

static int rrl_dc_headers(const rrl_dir_conf_t *dc)
{
    return dc->headers != RRL_UNSET ? dc->headers : RRL_HEADERS_LEGACY;
}

static const char *rrl_sc_prefix(const rrl_srv_conf_t *sc)
{
    return sc->key_prefix ? sc->key_prefix : RRL_DEFAULT_PREFIX;
}

static apr_size_t rrl_sc_local_size(const rrl_srv_conf_t *sc)
{
    return sc->local_size != RRL_UNSET ? (apr_size_t)sc->local_size
                                       : RRL_DEFAULT_LOCAL_SIZE;
}

/* ---- directive parsers ---- */

/* A whole decimal number in [min, max]; "10x", "1e9", "+5", overflow fail */
static int rrl_parse_int(const char *s, apr_int64_t min, apr_int64_t max,
                         apr_int64_t *out)
{
    char *end;
    apr_int64_t v;

    if (!s || !apr_isdigit(*s)) {
        return 0;
    }
    errno = 0;
    v = apr_strtoi64(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        return 0;
    }
    *out = v;
    return 1;
}

static const struct {
    const char *name;
    apr_int64_t seconds;
} rrl_units[] = {
    { "s", 1 }, { "sec", 1 }, { "secs", 1 }, { "second", 1 },
    { "seconds", 1 },
    { "m", 60 }, { "min", 60 }, { "mins", 60 }, { "minute", 60 },
    { "minutes", 60 },
    { "h", 3600 }, { "hr", 3600 }, { "hour", 3600 }, { "hours", 3600 },
    { "d", 86400 }, { "day", 86400 }, { "days", 86400 },
    { NULL, 0 }
};

/* "N/PERIOD", PERIOD an optional multiplier and a unit: 100/h, 1000/15min */
static const char *rrl_parse_rate(apr_pool_t *p, const char *text,
                                  apr_int64_t *count, apr_int64_t *period)
{
    const char *slash = strchr(text, '/'), *u;
    apr_int64_t n, mult = 1, max_n;
    int i;

    if (!slash) {
        goto bad;
    }
    if (!rrl_parse_int(apr_pstrndup(p, text, slash - text), 1,
                       APR_INT64_MAX, &n)) {
        goto bad;
    }
    u = slash + 1;
    if (apr_isdigit(*u)) {
        const char *d = u;

        while (apr_isdigit(*u)) {
            u++;
        }
        if (!rrl_parse_int(apr_pstrndup(p, d, u - d), 1, 366 * 86400,
                           &mult)) {
            return apr_psprintf(p, "'%s': the period's multiplier must be a "
                                "whole number from 1, such as 100/10s", text);
        }
    }
    for (i = 0; rrl_units[i].name; i++) {
        if (strcasecmp(u, rrl_units[i].name) == 0) {
            break;
        }
    }
    if (!rrl_units[i].name) {
        goto bad;
    }
    if (mult * rrl_units[i].seconds > 366 * 86400) {
        return apr_psprintf(p, "'%s': the period is longer than 366 days",
                            text);
    }
    *period = mult * rrl_units[i].seconds * RRL_USEC_PER_SEC;
    /* at most 1,000,000 per second: one unit refills in 1 us or more */
    max_n = *period;
    if (n > max_n) {
        return apr_psprintf(p, "'%s' is more than 1,000,000 per second, "
                            "the highest rate accepted", text);
    }
    *count = n;
    return NULL;

bad:
    return apr_psprintf(p, "'%s' is not a rate; expected N/PERIOD with N a "
                        "positive whole number and PERIOD s, sec, second, "
                        "m, min, minute, h, hour, d or day, optionally with "
                        "a multiplier, such as 100/h or 1000/15min", text);
}

/* Characters allowed in limit names: [A-Za-z0-9_.-] */
static int rrl_name_char(int c)
{
    return apr_isalnum(c) || c == '_' || c == '.' || c == '-';
}

static const char *rrl_sha1_hex(apr_pool_t *p, const char *data,
                                apr_size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char digest[APR_SHA1_DIGESTSIZE];
    apr_sha1_ctx_t ctx;
    char *out = apr_palloc(p, 2 * APR_SHA1_DIGESTSIZE + 1);
    int i;

    apr_sha1_init(&ctx);
    apr_sha1_update_binary(&ctx, (const unsigned char *)data,
                           (unsigned int)len);
    apr_sha1_final(digest, &ctx);
    for (i = 0; i < APR_SHA1_DIGESTSIZE; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[2 * APR_SHA1_DIGESTSIZE] = '\0';
    return out;
}

/* "/api/v1 login" -> "api-v1-login" */
static char *rrl_slug(apr_pool_t *p, const char *s)
{
    char *out = apr_palloc(p, strlen(s) + 1), *o = out;

    for (; *s; s++) {
        if (rrl_name_char(*s) && *s != '-') {
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
 * section.  Too long: the innermost section's kind and a hash.
 */
static int rrl_names_place(const char *section)
{
    static const char *const silent[] = {
        "<VirtualHost", "<IfModule", "<IfDefine", "<IfVersion", "<IfFile",
        "<IfDirective", "<IfSection", "<Macro", NULL
    };
    int i;

    if (section[0] != '<') {
        return 0;
    }
    for (i = 0; silent[i]; i++) {
        if (strcasecmp(section, silent[i]) == 0) {
            return 0;   /* they say nothing of where a request goes */
        }
    }
    return 1;
}

static const char *rrl_default_name(cmd_parms *cmd, int ordinal)
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
            part = apr_pstrcat(cmd->temp_pool, part, "-",
                               apr_pstrndup(cmd->temp_pool,
                                            rrl_sha1_hex(cmd->temp_pool, arg,
                                                         strlen(arg)), 8),
                               NULL);
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
    name = apr_psprintf(cmd->pool, "%s-%d", chain, ordinal);
    if (strlen(name) > RRL_NAME_MAX) {
        name = apr_psprintf(cmd->pool, "%s-%.16s-%d", kind,
                            rrl_sha1_hex(cmd->temp_pool, chain,
                                         strlen(chain)), ordinal);
    }
    return name;
}

static const char *rrl_check_params(apr_pool_t *p, const char *rate,
                                    rrl_params_t *rp, apr_int64_t cost,
                                    int burst_given)
{
    const char *alg = rrl_alg_names[rp->algorithm];

    rp->interval = (rp->period + rp->count - 1) / rp->count;
    if (rp->algorithm == RRL_ALG_GCRA
        || rp->algorithm == RRL_ALG_TOKEN_BUCKET) {
        if (rp->burst > RRL_MAX_REFILL / rp->interval) {
            return apr_psprintf(p, "burst=%" APR_INT64_T_FMT " at %s would "
                                "take more than 35 years to refill; lower "
                                "burst or raise the rate", rp->burst, rate);
        }
        if (cost > rp->burst) {
            return apr_psprintf(p, "cost=%" APR_INT64_T_FMT " is above "
                                "burst=%" APR_INT64_T_FMT ", so no request "
                                "could ever be allowed; accepted: cost from "
                                "1 to burst", cost, rp->burst);
        }
        return NULL;
    }
    if (burst_given) {
        return apr_psprintf(p, "burst= has no meaning for algorithm=%s; it "
                            "is accepted only with gcra and token-bucket",
                            alg);
    }
    rp->burst = rp->count;
    if (cost > rp->count) {
        return apr_psprintf(p, "cost=%" APR_INT64_T_FMT " is above the "
                            "%" APR_INT64_T_FMT " of %s, so no request could "
                            "ever be allowed; accepted: cost from 1 to %"
                            APR_INT64_T_FMT, cost, rp->count, rate,
                            rp->count);
    }
    if (rp->algorithm == RRL_ALG_SLIDING_WINDOW) {
        /* elapsed time in the finest unit that keeps N x PERIOD exact */
        static const apr_int64_t units[] = { 1, 1000, 1000000 };
        int i;

        for (i = 0; i < 3; i++) {
            if (rp->count <= RRL_MAX_PRODUCT / (rp->period / units[i])) {
                rp->unit = units[i];
                return NULL;
            }
        }
        return apr_psprintf(p, "%s is too large for algorithm=sliding-window "
                            "(N x PERIOD in seconds must stay below 2^52); "
                            "use gcra or fixed-window for it", rate);
    }
    return NULL;
}

static const char *rrl_cmd_rate_limit(cmd_parms *cmd, void *dcfg, int argc,
                                      char *const argv[])
{
    rrl_dir_conf_t *dc = dcfg;
    rrl_limit_t *l;
    const char *err;
    int i, burst_given = 0, phase_given = 0, prefix_given = 0;
    const char *seen = " ";

    if ((err = ap_check_cmd_context(cmd, NOT_IN_LIMIT)) != NULL) {
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

    l = apr_pcalloc(cmd->pool, sizeof(*l));
    l->rate_text = argv[0];
    l->cost = 1;
    l->phase = RRL_PHASE_ACCESS;
    l->ipv6_prefix = 64;
    l->server = cmd->server;
    l->in_vhost = cmd->server->is_virtual;
    l->file = cmd->directive->filename;
    l->line = cmd->directive->line_num;
    l->p.algorithm = RRL_ALG_GCRA;

    if ((err = rrl_parse_rate(cmd->temp_pool, argv[0], &l->p.count,
                              &l->p.period)) != NULL) {
        return apr_pstrcat(cmd->pool, "RateLimit: ", err, NULL);
    }
    l->p.burst = l->p.count;

    for (i = 1; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        const char *opt, *val;

        if (!eq || eq == argv[i] || !eq[1]) {
            return apr_psprintf(cmd->pool, "RateLimit: '%s' is not an "
                                "option; expected name=value with one of "
                                "burst, key, name, algorithm, cost, phase, "
                                "ipv6-prefix, count", argv[i]);
        }
        opt = apr_pstrndup(cmd->temp_pool, argv[i], eq - argv[i]);
        val = eq + 1;
        ap_str_tolower((char *)opt);
        if (ap_strstr_c(seen, apr_pstrcat(cmd->temp_pool, " ", opt, " ",
                                          NULL))) {
            return apr_psprintf(cmd->pool, "RateLimit: option %s= is given "
                                "twice", opt);
        }
        seen = apr_pstrcat(cmd->temp_pool, seen, opt, " ", NULL);

        if (strcmp(opt, "burst") == 0) {
            if (!rrl_parse_int(val, 1, APR_INT64_C(1) << 50, &l->p.burst)) {
                return apr_psprintf(cmd->pool, "RateLimit: burst=%s is not "
                                    "accepted; expected a positive whole "
                                    "number", val);
            }
            burst_given = 1;
        }
        else if (strcmp(opt, "cost") == 0) {
            if (!rrl_parse_int(val, 1, APR_INT64_C(1) << 50, &l->cost)) {
                return apr_psprintf(cmd->pool, "RateLimit: cost=%s is not "
                                    "accepted; expected a positive whole "
                                    "number", val);
            }
        }
        else if (strcmp(opt, "key") == 0) {
            const char *experr = NULL;

            l->key_text = apr_pstrdup(cmd->pool, val);
            l->key = ap_expr_parse_cmd(cmd, l->key_text,
                                       AP_EXPR_FLAG_STRING_RESULT,
                                       &experr, NULL);
            if (experr) {
                return apr_psprintf(cmd->pool, "RateLimit: key=%s does not "
                                    "parse as an expression (%s); expected "
                                    "a string expression such as "
                                    "%%{HTTP:X-Api-Key}", val, experr);
            }
            if (strcmp(val, "%{REMOTE_ADDR}") == 0) {
                l->key = NULL;          /* the client address, fast path */
            }
        }
        else if (strcmp(opt, "name") == 0) {
            const char *c;

            for (c = val; *c && rrl_name_char(*c); c++)
                ;
            if (*c || c - val > RRL_NAME_MAX) {
                return apr_psprintf(cmd->pool, "RateLimit: name=%s is not "
                                    "accepted; expected 1 to 64 of "
                                    "A-Z a-z 0-9 _ . -", val);
            }
            l->name = apr_pstrdup(cmd->pool, val);
        }
        else if (strcmp(opt, "algorithm") == 0) {
            int a;

            for (a = 0; rrl_alg_names[a]; a++) {
                if (strcasecmp(val, rrl_alg_names[a]) == 0) {
                    break;
                }
            }
            if (!rrl_alg_names[a]) {
                return apr_psprintf(cmd->pool, "RateLimit: algorithm=%s is "
                                    "not known; expected gcra, token-bucket, "
                                    "fixed-window or sliding-window", val);
            }
            l->p.algorithm = a;
        }
        else if (strcmp(opt, "phase") == 0) {
            if (strcasecmp(val, "access") == 0) {
                l->phase = RRL_PHASE_ACCESS;
            }
            else if (strcasecmp(val, "auth") == 0) {
                l->phase = RRL_PHASE_AUTH;
            }
            else {
                return apr_psprintf(cmd->pool, "RateLimit: phase=%s is not "
                                    "known; expected access or auth", val);
            }
            phase_given = 1;
        }
        else if (strcmp(opt, "ipv6-prefix") == 0) {
            apr_int64_t bits;

            if (!rrl_parse_int(val, 1, 128, &bits)) {
                return apr_psprintf(cmd->pool, "RateLimit: ipv6-prefix=%s is "
                                    "not accepted; expected a prefix length "
                                    "from 1 to 128", val);
            }
            l->ipv6_prefix = (int)bits;
            prefix_given = 1;
        }
        else if (strcmp(opt, "count") == 0) {
            char *list = apr_pstrdup(cmd->temp_pool, val), *tok, *state;

            l->statuses = apr_palloc(cmd->pool, sizeof(int) * strlen(val));
            for (tok = apr_strtok(list, ",", &state); tok;
                 tok = apr_strtok(NULL, ",", &state)) {
                apr_int64_t st;

                if (!rrl_parse_int(tok, 100, 599, &st)) {
                    return apr_psprintf(cmd->pool, "RateLimit: count=%s is "
                                        "not accepted; expected HTTP status "
                                        "codes from 100 to 599 separated by "
                                        "commas, such as count=401,403", val);
                }
                l->statuses[l->nstatuses++] = (int)st;
            }
            if (!l->nstatuses) {
                return apr_psprintf(cmd->pool, "RateLimit: count=%s names no "
                                    "status; expected count=401,403", val);
            }
        }
        else {
            return apr_psprintf(cmd->pool, "RateLimit: unknown option '%s'; "
                                "accepted: burst, key, name, algorithm, cost, "
                                "phase, ipv6-prefix, count", opt);
        }
    }
    (void)prefix_given;

    if ((err = rrl_check_params(cmd->pool, l->rate_text, &l->p, l->cost,
                                burst_given)) != NULL) {
        return apr_pstrcat(cmd->pool, "RateLimit: ", err, NULL);
    }
    if (!phase_given && l->key_text && ap_strstr_c(l->key_text,
                                                   "REMOTE_USER")) {
        l->phase = RRL_PHASE_AUTH;     /* the user is known only then */
    }
    if (!l->name) {
        l->name = rrl_default_name(cmd, ++dc->unnamed);
        l->auto_named = 1;
    }

    /* one name in one section is one limit */
    if (dc->limits) {
        for (i = 0; i < dc->limits->nelts; i++) {
            const rrl_limit_t *o = APR_ARRAY_IDX(dc->limits, i,
                                                 rrl_limit_t *);
            if (strcmp(o->name, l->name) == 0) {
                return apr_psprintf(cmd->pool, "RateLimit: name=%s is "
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

static const char *rrl_cmd_mode(cmd_parms *cmd, void *dcfg, const char *arg)
{
    rrl_dir_conf_t *dc = dcfg;

    if (strcasecmp(arg, "enforce") == 0) {
        dc->mode = RRL_ENFORCE;
    }
    else if (strcasecmp(arg, "dry-run") == 0) {
        dc->mode = RRL_DRY_RUN;
    }
    else {
        return apr_psprintf(cmd->pool, "RateLimitMode: '%s' is not a mode; "
                            "expected enforce or dry-run", arg);
    }
    return NULL;
}

static const char *rrl_cmd_status(cmd_parms *cmd, void *dcfg, const char *arg)
{
    rrl_dir_conf_t *dc = dcfg;
    apr_int64_t st;

    if (!rrl_parse_int(arg, 400, 599, &st)) {
        return apr_psprintf(cmd->pool, "RateLimitStatus: '%s' is not "
                            "accepted; expected an HTTP status from 400 to "
                            "599, such as 429 or 503", arg);
    }
    dc->status = (int)st;
    return NULL;
}

static const char *rrl_cmd_headers(cmd_parms *cmd, void *dcfg,
                                   const char *arg)
{
    static const char *const names[] = { "off", "legacy", "ietf", "both",
                                         NULL };
    rrl_dir_conf_t *dc = dcfg;
    int i;

    for (i = 0; names[i]; i++) {
        if (strcasecmp(arg, names[i]) == 0) {
            dc->headers = i;
            return NULL;
        }
    }
    return apr_psprintf(cmd->pool, "RateLimitHeaders: '%s' is not accepted; "
                        "expected off, legacy, ietf or both", arg);
}

static const char *rrl_cmd_exempt(cmd_parms *cmd, void *dcfg, const char *arg)
{
    rrl_dir_conf_t *dc = dcfg;
    apr_ipsubnet_t *sub;
    char *ip = apr_pstrdup(cmd->temp_pool, arg), *mask;
    apr_status_t rv;

    if ((mask = strchr(ip, '/')) != NULL) {
        *mask++ = '\0';
    }
    if (!*ip || (mask && !*mask)
        || (rv = apr_ipsubnet_create(&sub, ip, mask, cmd->pool))
           != APR_SUCCESS) {
        return apr_psprintf(cmd->pool, "RateLimitExempt: '%s' is not an IP "
                            "address or CIDR; expected forms such as "
                            "192.0.2.7, 10.0.0.0/8 or 2001:db8::/32", arg);
    }
    if (!dc->exempt) {
        dc->exempt = apr_array_make(cmd->pool, 2, sizeof(apr_ipsubnet_t *));
    }
    APR_ARRAY_PUSH(dc->exempt, apr_ipsubnet_t *) = sub;
    return NULL;
}

static const char *rrl_cmd_key_prefix(cmd_parms *cmd, void *dummy,
                                      const char *arg)
{
    rrl_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config,
                                              &redis_ratelimit_module);
    const char *c;

    (void)dummy;
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

static const char *rrl_cmd_deny_cache(cmd_parms *cmd, void *dummy, int on)
{
    rrl_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config,
                                              &redis_ratelimit_module);

    (void)dummy;
    sc->deny_cache = on;
    return NULL;
}

static const char *rrl_cmd_local_size(cmd_parms *cmd, void *dummy,
                                      const char *arg)
{
    rrl_srv_conf_t *sc = ap_get_module_config(cmd->server->module_config,
                                              &redis_ratelimit_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
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
    if (!rrl_parse_int(num, 1, RRL_MAX_LOCAL_SIZE, &v)
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

static const command_rec rrl_cmds[] = {
    AP_INIT_TAKE_ARGV("RateLimit", rrl_cmd_rate_limit, NULL,
                      RSRC_CONF | ACCESS_CONF,
                      "RATE [burst=N] [key=EXPR] [name=NAME] "
                      "[algorithm=gcra|token-bucket|fixed-window|"
                      "sliding-window] [cost=N] [phase=access|auth] "
                      "[ipv6-prefix=N] [count=STATUS,...], or 'off'"),
    AP_INIT_TAKE1("RateLimitMode", rrl_cmd_mode, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "enforce (default) or dry-run: count and log, never deny"),
    AP_INIT_TAKE1("RateLimitStatus", rrl_cmd_status, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "HTTP status of a denial, 400-599 (default 429)"),
    AP_INIT_TAKE1("RateLimitHeaders", rrl_cmd_headers, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "off, legacy (default), ietf or both"),
    AP_INIT_ITERATE("RateLimitExempt", rrl_cmd_exempt, NULL,
                    RSRC_CONF | ACCESS_CONF,
                    "client IP addresses or CIDR ranges no limit applies to"),
    AP_INIT_TAKE1("RateLimitKeyPrefix", rrl_cmd_key_prefix, NULL, RSRC_CONF,
                  "prefix of every key the module stores (default rl:)"),
    AP_INIT_FLAG("RateLimitDenyCache", rrl_cmd_deny_cache, NULL, RSRC_CONF,
                 "on (default): answer keys Redis denied locally until they "
                 "may pass again"),
    AP_INIT_TAKE1("RateLimitLocalSize", rrl_cmd_local_size, NULL, RSRC_CONF,
                  "bytes of shared memory for the local store (default 8M)"),
    { NULL }
};

/* ---- keys and rate arithmetic ---- */

/*
 * The four algorithms, in integer microseconds.  st[] is the stored state
 * (present == 0: nothing stored, which every algorithm reads as "nothing
 * used"), now the store's clock.  lua/ratelimit.lua is the same code for
 * Redis; t/vectors.json holds the cases both must answer alike.
 *
 *   gcra           st = { tat }            theoretical arrival time
 *   token-bucket   st = { tokens, ts }     tokens as of ts
 *   fixed-window   st = { window, count }
 *   sliding-window st = { window, count, previous window's count }
 */
static apr_int64_t rrl_floor_div(apr_int64_t a, apr_int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

static void rrl_algo(const rrl_params_t *p, apr_int64_t cost, rrl_mode_e mode,
                     const apr_int64_t *st, int present, apr_int64_t now,
                     rrl_outcome_t *o)
{
    apr_int64_t n = p->count, T = p->interval, P = p->period;

    memset(o, 0, sizeof(*o));
    switch (p->algorithm) {
    case RRL_ALG_GCRA: {
        apr_int64_t tau = p->burst * T;
        apr_int64_t base = (present && st[0] > now) ? st[0] : now;
        apr_int64_t want = base + cost * T;

        if (mode == RRL_MODE_FORCE && want - now > tau) {
            want = now + tau;
        }
        o->allowed = mode == RRL_MODE_FORCE || want - now <= tau;
        if (o->allowed && mode != RRL_MODE_CHECK) {
            o->write = 1;
            o->next[0] = want;
            o->ttl = want - now;
            base = want;
        }
        else if (!o->allowed) {
            o->retry = want - now - tau;
        }
        o->remaining = tau - (base - now) > 0 ? (tau - (base - now)) / T : 0;
        o->reset = base - now;
        break;
    }
    case RRL_ALG_TOKEN_BUCKET: {
        apr_int64_t tokens = present ? st[0] : p->burst;
        apr_int64_t ts = present ? st[1] : now;

        if (now > ts && tokens < p->burst) {
            apr_int64_t add = (now - ts) / T;

            if (add >= p->burst - tokens) {
                tokens = p->burst;
            }
            else {
                tokens += add;
                ts += add * T;
            }
        }
        if (tokens >= p->burst) {
            tokens = p->burst;
            ts = now;
        }
        if (mode == RRL_MODE_FORCE) {
            o->allowed = 1;
            cost = cost < tokens ? cost : tokens;
        }
        else {
            o->allowed = tokens >= cost;
        }
        if (o->allowed && mode != RRL_MODE_CHECK) {
            tokens -= cost;
            o->write = 1;
            o->next[0] = tokens;
            o->next[1] = ts;
        }
        else if (!o->allowed) {
            o->retry = (cost - tokens) * T - (now - ts);
        }
        o->remaining = tokens;
        o->reset = tokens >= p->burst ? 0 : (p->burst - tokens) * T
                                             - (now - ts);
        o->ttl = o->reset;
        break;
    }
    case RRL_ALG_FIXED_WINDOW: {
        apr_int64_t w = now / P, c = 0, end;

        if (present) {
            if (st[0] >= w) {
                w = st[0];           /* a clock going back stays put */
                c = st[1];
            }
        }
        end = (w + 1) * P;
        if (mode == RRL_MODE_FORCE) {
            o->allowed = 1;
            cost = c + cost <= n ? cost : n - c;
        }
        else {
            o->allowed = c + cost <= n;
        }
        if (o->allowed && mode != RRL_MODE_CHECK) {
            c += cost;
            o->write = 1;
            o->next[0] = w;
            o->next[1] = c;
            o->ttl = end - now;
        }
        else if (!o->allowed) {
            o->retry = end - now;
        }
        o->remaining = n - c > 0 ? n - c : 0;
        o->reset = c > 0 ? end - now : 0;
        break;
    }
    case RRL_ALG_SLIDING_WINDOW: {
        apr_int64_t U = p->unit, PU = P / U;
        apr_int64_t w = now / P, curr = 0, prev = 0, e, weight, avail;

        if (present) {
            if (st[0] >= w) {
                w = st[0];
                curr = st[1];
                prev = st[2];
            }
            else if (st[0] == w - 1) {
                prev = st[1];
            }
        }
        e = now - w * P;
        if (e < 0) {
            e = 0;
        }
        weight = PU - e / U;                 /* of the previous window */
        /* the most this window may hold: prev*weight + total*PU <= N*PU */
        avail = rrl_floor_div(n * PU - prev * weight, PU);
        if (mode == RRL_MODE_FORCE) {
            o->allowed = 1;
            cost = curr + cost <= n ? cost : n - curr;
        }
        else {
            o->allowed = curr + cost <= avail;
        }
        if (o->allowed && mode != RRL_MODE_CHECK) {
            curr += cost;
            o->write = 1;
            o->next[0] = w;
            o->next[1] = curr;
            o->next[2] = prev;
            o->ttl = (w + 2) * P - now;
        }
        else if (!o->allowed) {
            /* the first moment this request would pass: later in this
             * window as the previous one fades, or else in the next */
            apr_int64_t a = n - curr - cost, at;

            if (a >= 0 && prev > 0 && PU - (a * PU) / prev < PU) {
                at = w * P + (PU - (a * PU) / prev) * U;
            }
            else {
                apr_int64_t b = n - cost, e2 = 0;

                if (curr > 0) {
                    e2 = PU - (b * PU) / curr;
                    e2 = e2 > 0 ? e2 : 0;
                }
                at = (w + 1) * P + e2 * U;
            }
            o->retry = at - now;
        }
        o->remaining = avail - curr > 0 ? avail - curr : 0;
        o->reset = curr > 0 ? (w + 2) * P - now
                            : prev > 0 ? (w + 1) * P - now : 0;
        break;
    }
    }
}

/* Printable ASCII up to 64 bytes stays as it is; anything else is SHA-1 */
static const char *rrl_key_value(apr_pool_t *p, const char *v, apr_size_t len)
{
    apr_size_t i;

    if (len <= RRL_KEY_MAX) {
        for (i = 0; i < len; i++) {
            if (v[i] < ' ' || v[i] > '~') {
                break;
            }
        }
        if (i == len) {
            return v;
        }
    }
    return rrl_sha1_hex(p, v, len);
}

/* An IPv6 client stands for its first bits: "2001:db8:1:2::/64" */
static const char *rrl_ipv6_group(request_rec *r, int bits)
{
    const apr_sockaddr_t *sa = r->useragent_addr;
    unsigned char a[16];
    char buf[INET6_ADDRSTRLEN];
    int i;

    if (!sa || sa->family != APR_INET6 || bits >= 128) {
        return NULL;
    }
    memcpy(a, sa->ipaddr_ptr, 16);
    if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a)) {
        return NULL;
    }
    for (i = 0; i < 16; i++) {
        int keep = bits - 8 * i;

        if (keep <= 0) {
            a[i] = 0;
        }
        else if (keep < 8) {
            a[i] &= (unsigned char)(0xff << (8 - keep));
        }
    }
    if (!inet_ntop(AF_INET6, a, buf, sizeof(buf))) {
        return NULL;
    }
    return apr_psprintf(r->pool, "%s/%d", buf, bits);
}

/* "rl:" "api.example.com:" "login" ":" value, or NULL if the key is empty */
static const char *rrl_limit_key(request_rec *r, const rrl_limit_t *l,
                                 const char *prefix, apr_size_t *lenp)
{
    const char *v, *group, *key;

    if (!l->key) {
        v = r->useragent_ip;
        group = rrl_ipv6_group(r, l->ipv6_prefix);
        if (group) {
            v = group;
        }
    }
    else {
        const char *err = NULL;

        v = ap_expr_str_exec(r, l->key, &err);
        if (err) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, RRL_LOGNO(00001)
                          "RateLimit %s: key expression failed (%s); the "
                          "limit does not count this request", l->name, err);
            return NULL;
        }
        if (v && *v && r->useragent_ip
            && (group = rrl_ipv6_group(r, l->ipv6_prefix)) != NULL) {
            const char *ip = r->useragent_ip, *hit;
            apr_size_t iplen = strlen(ip);
            char *out = "";

            while ((hit = ap_strstr_c(v, ip)) != NULL) {
                out = apr_pstrcat(r->pool, out,
                                  apr_pstrmemdup(r->pool, v, hit - v), group,
                                  NULL);
                v = hit + iplen;
            }
            v = apr_pstrcat(r->pool, out, v, NULL);
        }
    }
    if (!v || !*v) {
        return NULL;
    }
    v = rrl_key_value(r->pool, v, strlen(v));
    key = apr_pstrcat(r->pool, prefix, l->scope, l->name, ":", v, NULL);
    *lenp = strlen(key);
    return key;
}

/* ---- local store ---- */

static void rrl_local_hash(const char *key, apr_size_t len,
                           apr_uint64_t h[2])
{
    unsigned char digest[APR_MD5_DIGESTSIZE];
    apr_md5_ctx_t ctx;

    /* keyed with a secret salt: clients cannot aim keys at one bucket */
    apr_md5_init(&ctx);
    apr_md5_update(&ctx, rrl_store->table->salt,
                   sizeof(rrl_store->table->salt));
    apr_md5_update(&ctx, key, len);
    apr_md5_final(digest, &ctx);
    memcpy(h, digest, sizeof(digest));
}

/* The live slot of h, or NULL; with claim, a slot to store h in */
static rrl_slot_t *rrl_local_slot(const apr_uint64_t h[2], apr_int64_t now,
                                  int claim)
{
    rrl_table_t *t = rrl_store->table;
    rrl_slot_t *b = &t->slots[(h[0] % t->nbuckets) * RRL_WAYS];
    rrl_slot_t *victim = NULL;
    int i;

    for (i = 0; i < RRL_WAYS; i++) {
        if (b[i].expires > now && b[i].h[0] == h[0] && b[i].h[1] == h[1]) {
            return &b[i];
        }
    }
    if (!claim) {
        return NULL;
    }
    for (i = 0; i < RRL_WAYS; i++) {
        if (b[i].expires <= now) {
            return &b[i];
        }
        if (!victim || b[i].expires < victim->expires) {
            victim = &b[i];
        }
    }
    t->evictions++;
    return victim;   /* full: what expires first gives way */
}

/* Decide every item in one critical section: check all, then spend all */
static apr_status_t rrl_local_decide(request_rec *r, rrl_item_t *items, int n,
                                     apr_int64_t now)
{
    apr_uint64_t (*h)[2] = apr_palloc(r->pool, sizeof(*h) * n);
    rrl_outcome_t *o = apr_palloc(r->pool, sizeof(*o) * n);
    apr_status_t rv;
    int i, all = 1;

    for (i = 0; i < n; i++) {
        rrl_local_hash(items[i].key, items[i].keylen, h[i]);
    }
    if ((rv = apr_global_mutex_lock(rrl_store->mutex)) != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, RRL_LOGNO(00002)
                      "cannot lock the local store; the request is "
                      "allowed");
        return rv;
    }
    for (i = 0; i < n; i++) {
        rrl_slot_t *s = rrl_local_slot(h[i], now, 0);

        rrl_algo(items[i].p, items[i].cost, items[i].mode,
                 s ? s->v : NULL, s != NULL, now, &o[i]);
        all = all && o[i].allowed;
    }
    for (i = 0; all && i < n; i++) {
        rrl_slot_t *s;

        if (!o[i].write) {
            continue;
        }
        s = rrl_local_slot(h[i], now, 1);
        if (o[i].ttl > 0) {
            s->h[0] = h[i][0];
            s->h[1] = h[i][1];
            memcpy(s->v, o[i].next, sizeof(s->v));
            s->expires = now + o[i].ttl;
        }
        else {
            s->expires = 0;
        }
    }
    apr_global_mutex_unlock(rrl_store->mutex);

    for (i = 0; i < n; i++) {
        items[i].allowed = o[i].allowed;
        items[i].remaining = o[i].remaining;
        items[i].reset = o[i].reset;
        items[i].retry = o[i].retry;
    }
    return APR_SUCCESS;
}

static apr_status_t rrl_store_create(server_rec *s, apr_size_t want)
{
    apr_pool_t *pglobal = s->process->pool;
    rrl_store_t *st = NULL;
    apr_status_t rv;
    apr_size_t nbuckets;

    /* reuse the store of an earlier generation when its size still fits:
     * limits carry on over a graceful restart */
    apr_pool_userdata_get((void **)&st, "rrl_store", pglobal);
    if (st && st->size == want) {
        rrl_store = st;
        return APR_SUCCESS;
    }
    st = apr_pcalloc(pglobal, sizeof(*st));
    st->size = want;
    rv = apr_shm_create(&st->shm, want, NULL, pglobal);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00003)
                     "cannot create %" APR_SIZE_T_FMT " bytes of shared "
                     "memory for the local store (RateLimitLocalSize)", want);
        return rv;
    }
    rv = ap_global_mutex_create(&st->mutex, &st->mutex_file, RRL_MUTEX_TYPE,
                                NULL, s, pglobal, 0);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00004)
                     "cannot create the local store's mutex");
        return rv;
    }
    st->table = apr_shm_baseaddr_get(st->shm);
    memset(st->table, 0, want);
    nbuckets = (want - APR_OFFSETOF(rrl_table_t, slots))
               / (sizeof(rrl_slot_t) * RRL_WAYS);
    st->table->nbuckets = (apr_uint32_t)nbuckets;
    st->table->magic = RRL_SHM_MAGIC;
    if ((rv = apr_generate_random_bytes(st->table->salt,
                                        sizeof(st->table->salt)))
        != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00005)
                     "cannot seed the local store's hash");
        return rv;
    }
    apr_pool_userdata_set(st, "rrl_store", apr_pool_cleanup_null, pglobal);
    rrl_store = st;
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, RRL_LOGNO(00006)
                 "local store: %" APR_SIZE_T_FMT " bytes, %u keys",
                 want, (unsigned)(nbuckets * RRL_WAYS));
    return APR_SUCCESS;
}

/* ---- decision: access and fixups hooks, headers, environment ---- */

static rrl_req_t *rrl_req(request_rec *r)
{
    rrl_req_t *rq = ap_get_module_config(r->request_config,
                                         &redis_ratelimit_module);

    if (!rq) {
        rq = apr_pcalloc(r->pool, sizeof(*rq));
        ap_set_module_config(r->request_config, &redis_ratelimit_module, rq);
    }
    return rq;
}

static int rrl_is_exempt(request_rec *r, const rrl_dir_conf_t *dc)
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

static apr_int64_t rrl_ceil_sec(apr_int64_t us)
{
    return us > 0 ? (us + RRL_USEC_PER_SEC - 1) / RRL_USEC_PER_SEC : 0;
}

static void rrl_set_headers(request_rec *r, int how, const rrl_item_t *it,
                            apr_int64_t now)
{
    const rrl_limit_t *l = it->limit;
    apr_table_t *h = r->err_headers_out;

    if (how == RRL_HEADERS_LEGACY || how == RRL_HEADERS_BOTH) {
        apr_table_setn(h, RRL_HDR_LIMIT, apr_psprintf(r->pool,
                       "%" APR_INT64_T_FMT, it->p->count));
        apr_table_setn(h, RRL_HDR_REMAINING, apr_psprintf(r->pool,
                       "%" APR_INT64_T_FMT, it->remaining));
        apr_table_setn(h, RRL_HDR_RESET, apr_psprintf(r->pool,
                       "%" APR_INT64_T_FMT, rrl_ceil_sec(now + it->reset)));
    }
    if (how == RRL_HEADERS_IETF || how == RRL_HEADERS_BOTH) {
        apr_table_setn(h, RRL_HDR_POLICY, apr_psprintf(r->pool,
                       "\"%s\";q=%" APR_INT64_T_FMT ";w=%" APR_INT64_T_FMT,
                       l->name, it->p->count,
                       it->p->period / RRL_USEC_PER_SEC));
        apr_table_setn(h, RRL_HDR_RATELIMIT, apr_psprintf(r->pool,
                       "\"%s\";r=%" APR_INT64_T_FMT ";t=%" APR_INT64_T_FMT,
                       l->name, it->remaining, rrl_ceil_sec(it->reset)));
    }
}

static void rrl_set_env(request_rec *r, const rrl_req_t *rq)
{
    apr_table_setn(r->subprocess_env, RRL_ENV_RESULT,
                   rrl_result_names[rq->result]);
    if (rq->shown) {
        apr_table_setn(r->subprocess_env, RRL_ENV_NAME, rq->shown->name);
        apr_table_setn(r->subprocess_env, RRL_ENV_LIMIT,
                       apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                                    rq->shown->p.count));
        apr_table_setn(r->subprocess_env, RRL_ENV_REMAINING,
                       apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                                    rq->shown_remaining));
    }
}

/*
 * Turn the items' outcomes into the answer: the headers of the limit with
 * the least left (of a denial: the denying limit that frees last), the
 * environment, and DECLINED or the denial status.
 */
static int rrl_answer(request_rec *r, const rrl_dir_conf_t *dc, rrl_req_t *rq,
                      rrl_item_t *items, int n, apr_int64_t now)
{
    const rrl_item_t *shown = NULL;
    apr_int64_t retry = 0;
    int i, allowed = 1;

    for (i = 0; i < n; i++) {
        if (!items[i].allowed) {
            allowed = 0;
            retry = items[i].retry > retry ? items[i].retry : retry;
        }
    }
    for (i = 0; i < n; i++) {
        const rrl_item_t *it = &items[i];

        if (!allowed && it->allowed) {
            continue;
        }
        if (!shown
            || (allowed && it->remaining < shown->remaining)
            || (!allowed && (it->retry > shown->retry
                             || (it->retry == shown->retry
                                 && it->remaining < shown->remaining)))) {
            shown = it;
        }
    }

    /* an earlier phase may have shown a limit with less left */
    if (!allowed || !rq->shown || shown->remaining < rq->shown_remaining) {
        rq->shown = shown->limit;
        rq->shown_remaining = shown->remaining;
        if (rrl_dc_headers(dc) != RRL_HEADERS_OFF) {
            rrl_set_headers(r, rrl_dc_headers(dc), shown, now);
        }
    }

    if (allowed) {
        if (rq->result == RRL_RES_NONE) {
            rq->result = RRL_RES_ALLOWED;
        }
        rrl_set_env(r, rq);
        return DECLINED;
    }
    if (rrl_dc_mode(dc) == RRL_DRY_RUN) {
        rq->result = RRL_RES_DRY_RUN_DENIED;
        rrl_set_env(r, rq);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RRL_LOGNO(00007)
                      "RateLimit %s would deny this request (dry-run)",
                      shown->limit->name);
        return DECLINED;
    }
    rq->result = RRL_RES_DENIED;
    rq->denied = 1;
    rq->pending = NULL;          /* a denied request spends nothing */
    rrl_set_env(r, rq);
    apr_table_setn(r->err_headers_out, "Retry-After",
                   apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                                retry > RRL_USEC_PER_SEC
                                ? rrl_ceil_sec(retry) : 1));
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RRL_LOGNO(00008)
                  "RateLimit %s denies this request, retry in %"
                  APR_INT64_T_FMT " ms", shown->limit->name,
                  (retry + 999) / 1000);
    return rrl_dc_status(dc);
}

static int rrl_decide_phase(request_rec *r, rrl_phase_e phase)
{
    const rrl_dir_conf_t *dc;
    const rrl_srv_conf_t *sc;
    rrl_req_t *rq;
    rrl_item_t *items;
    const char *prefix;
    apr_int64_t now;
    int i, n = 0;

    if (!ap_is_initial_req(r)) {
        return DECLINED;
    }
    dc = ap_get_module_config(r->per_dir_config, &redis_ratelimit_module);
    if (!dc->limits || !dc->limits->nelts) {
        return DECLINED;
    }
    rq = rrl_req(r);
    if (!rq->exempt_checked) {
        rq->exempt_checked = 1;
        if (rrl_is_exempt(r, dc)) {
            rq->exempt = 1;
            rq->result = RRL_RES_EXEMPT;
            rrl_set_env(r, rq);
        }
    }
    if (rq->exempt || rq->denied) {
        return DECLINED;
    }

    sc = ap_get_module_config(r->server->module_config,
                              &redis_ratelimit_module);
    prefix = rrl_sc_prefix(sc);
    items = apr_palloc(r->pool, sizeof(*items) * dc->limits->nelts);
    for (i = 0; i < dc->limits->nelts; i++) {
        const rrl_limit_t *l = APR_ARRAY_IDX(dc->limits, i, rrl_limit_t *);
        rrl_item_t *it = &items[n];

        if (l->phase != phase) {
            continue;
        }
        it->key = rrl_limit_key(r, l, prefix, &it->keylen);
        if (!it->key) {
            continue;                /* an empty key is not counted */
        }
        it->limit = l;
        it->p = &l->p;
        it->cost = l->cost;
        it->mode = l->nstatuses ? RRL_MODE_CHECK : RRL_MODE_SPEND;
        if (it->mode == RRL_MODE_CHECK) {
            if (!rq->pending) {
                rq->pending = apr_array_make(r->pool, 2, sizeof(rrl_item_t));
            }
            APR_ARRAY_PUSH(rq->pending, rrl_item_t) = *it;
        }
        n++;
    }
    if (!n) {
        return DECLINED;
    }

    now = apr_time_now();
    if (rrl_local_decide(r, items, n, now) != APR_SUCCESS) {
        return DECLINED;
    }
    return rrl_answer(r, dc, rq, items, n, now);
}

static int rrl_hook_access(request_rec *r)
{
    return rrl_decide_phase(r, RRL_PHASE_ACCESS);
}

static int rrl_hook_fixups(request_rec *r)
{
    return rrl_decide_phase(r, RRL_PHASE_AUTH);
}

/*
 * count= limits spend when the response is logged, and only on the final
 * statuses they name.  The RATELIMIT_* variables are also copied to the
 * final request of an internal redirect (ErrorDocument 429), where
 * mod_log_config reads them.
 */
static int rrl_hook_log(request_rec *r)
{
    rrl_req_t *rq = ap_get_module_config(r->request_config,
                                         &redis_ratelimit_module);
    request_rec *last = r;
    rrl_item_t *items;
    int i, n = 0;

    if (!rq) {
        return DECLINED;
    }
    while (last->next) {
        last = last->next;
    }
    if (last != r && rq->result != RRL_RES_NONE) {
        rrl_set_env(last, rq);
    }
    if (!rq->pending || rq->denied) {
        return DECLINED;
    }
    items = (rrl_item_t *)rq->pending->elts;
    for (i = 0; i < rq->pending->nelts; i++) {
        const rrl_limit_t *l = items[i].limit;
        int j;

        for (j = 0; j < l->nstatuses; j++) {
            if (l->statuses[j] == last->status) {
                items[n] = items[i];
                items[n].mode = RRL_MODE_FORCE;
                n++;
                break;
            }
        }
    }
    if (n) {
        rrl_local_decide(r, items, n, apr_time_now());
    }
    return DECLINED;
}

/* ---- lifecycle hooks, register_hooks, module struct ---- */

static int rrl_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                          apr_pool_t *ptemp)
{
    apr_status_t rv;

    (void)plog;
    (void)ptemp;
    rv = ap_mutex_register(pconf, RRL_MUTEX_TYPE, NULL, APR_LOCK_DEFAULT, 0);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    rrl_all_limits = apr_array_make(pconf, 16, sizeof(rrl_limit_t *));
    return OK;
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
        || a->nstatuses != b->nstatuses
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

static int rrl_check_config(apr_pool_t *pconf, apr_pool_t *plog,
                            apr_pool_t *ptemp, server_rec *s)
{
    apr_hash_t *seen = apr_hash_make(ptemp);
    int i, bad = 0;

    (void)plog;
    (void)s;
    for (i = 0; rrl_all_limits && i < rrl_all_limits->nelts; i++) {
        rrl_limit_t *l = APR_ARRAY_IDX(rrl_all_limits, i, rrl_limit_t *);
        const char *id;
        const rrl_limit_t *o;

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
                         RRL_LOGNO(00009) "%s:%u: RateLimit %s name=%s "
                         "differs from the limit of that name at %s:%u%s%s; "
                         "one name in one %s is one limit, so give them the "
                         "same settings or different names", l->file,
                         l->line, l->rate_text, l->name, o->file, o->line,
                         l->auto_named ? " (a default name: add name= to "
                         "tell them apart)" : "",
                         "", l->in_vhost ? "virtual host" : "server");
            bad = 1;
        }
    }
    return bad ? !OK : OK;
}

static int rrl_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    const rrl_srv_conf_t *sc = ap_get_module_config(s->module_config,
                                                    &redis_ratelimit_module);

    (void)pconf;
    (void)plog;
    (void)ptemp;
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    if (rrl_store_create(s, rrl_sc_local_size(sc)) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_add_version_component(pconf, "mod_redis_ratelimit/" RRL_VERSION);
    return OK;
}

static void rrl_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv;

    if (!rrl_store) {
        return;
    }
    rv = apr_global_mutex_child_init(&rrl_store->mutex,
                                     rrl_store->mutex_file, pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00010)
                     "cannot attach to the local store's mutex in this "
                     "child");
    }
}

static void rrl_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(rrl_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(rrl_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(rrl_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(rrl_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    /* first among access checks: a denied request costs no authentication */
    ap_hook_access_checker(rrl_hook_access, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_fixups(rrl_hook_fixups, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_log_transaction(rrl_hook_log, NULL, NULL, APR_HOOK_FIRST);
}

AP_DECLARE_MODULE(redis_ratelimit) = {
    STANDARD20_MODULE_STUFF,
    rrl_create_dir_conf,
    rrl_merge_dir_conf,
    rrl_create_srv_conf,
    rrl_merge_srv_conf,
    rrl_cmds,
    rrl_register_hooks,
    AP_MODULE_FLAG_NONE
};
