/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * What every part of mod_redis_ratelimit shares: the names the
 * specification fixes, a limit as RateLimit parses it (rrl_limit_t) and one
 * limit being decided for one request (rrl_item_t).  Each area of src/ has
 * its own types in its own header (docs/architecture.md).
 */

#ifndef RRL_H
#define RRL_H

#include "apr.h"
#include "apr_pools.h"
#include "apr_tables.h"
#include "apr_time.h"

#include "httpd.h"
#include "http_config.h"
#include "ap_expr.h"

#define RRL_VERSION "0.1.0"

/* Every message at DEBUG and above has its own number
 * (docs/log-messages.md) */
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
#define RRL_DEFAULT_PREFIX "rl:"
#define RRL_STATUS_HANDLER "redis-ratelimit-status"

#define RRL_USEC_PER_SEC   APR_INT64_C(1000000)
#define RRL_MAX_PERIOD     (APR_INT64_C(366) * 86400 * RRL_USEC_PER_SEC)
/* Everything the algorithms compute stays below 2^53, so that Lua's
 * doubles in Redis hold it exactly: a full bucket refills in at most 2^50 us
 * (35 years), sliding-window products stay below 2^52. */
#define RRL_MAX_REFILL     (APR_INT64_C(1) << 50)
#define RRL_MAX_PRODUCT    (APR_INT64_C(1) << 52)
#define RRL_MAX_UNITS      RRL_MAX_REFILL   /* of burst= and cost= */
#define RRL_KEY_MAX        64      /* longer key values are hashed */
#define RRL_NAME_MAX       64

typedef enum {
    RRL_ALG_NONE = -1,          /* of a state: nothing stored */
    RRL_ALG_GCRA = 0,
    RRL_ALG_TOKEN_BUCKET,
    RRL_ALG_FIXED_WINDOW,
    RRL_ALG_SLIDING_WINDOW,
    RRL_ALG_CONCURRENCY         /* RateLimitConcurrency: requests in flight */
} rrl_alg_e;

typedef enum { RRL_PHASE_ACCESS = 0, RRL_PHASE_AUTH } rrl_phase_e;

/* What one decision does with one limit */
typedef enum {
    RRL_MODE_SPEND = 0,   /* check, and spend when every limit allows */
    RRL_MODE_REFUND,      /* give back a spend (count=: at log time, when
                           * the final status is not one that counts); of
                           * a concurrency limit: release its slot */
    RRL_MODE_RENEW        /* a concurrency limit: extend its slot's lease
                           * (a response still under way) */
} rrl_mode_e;

typedef enum { RRL_ENFORCE = 0, RRL_DRY_RUN } rrl_run_mode_e;

/* RateLimitOnError: what decides while Redis cannot */
typedef enum {
    RRL_ONERR_ALLOW = 0,
    RRL_ONERR_DENY,
    RRL_ONERR_LOCAL
} rrl_on_error_e;

/* plans= of a limit: per-key overrides of its RATE and burst */
typedef enum {
    RRL_PLANS_NONE = 0,
    RRL_PLANS_REDIS,              /* read by the script, beside the key */
    RRL_PLANS_FILE                /* from a file (rrl_plan_file.c) */
} rrl_plans_e;

/* What a key's plan said, as the script answers it (lua/ratelimit.lua) */
typedef enum {
    RRL_PLAN_NONE = 0,            /* no plan: the directive's RATE */
    RRL_PLAN_APPLIED,             /* the plan's RATE and burst decided */
    RRL_PLAN_OFF,                 /* "off": this limit does not apply */
    RRL_PLAN_INVALID              /* does not parse: the directive's RATE */
} rrl_plan_e;

/* Who decided: the configured store, or the local store standing in */
typedef enum { RRL_BY_STORE = 0, RRL_BY_LOCAL_FALLBACK } rrl_source_e;

typedef enum {
    RRL_HEADERS_OFF = 0,
    RRL_HEADERS_LEGACY,
    RRL_HEADERS_IETF,
    RRL_HEADERS_BOTH
} rrl_headers_e;

/*
 * RATELIMIT_RESULT: each value, its text, and the status page's counter of
 * it (rrl_counters.h): ?auto key, JSON name, what it counts.  One list,
 * so that the enum, its texts, the counters and the metrics' result labels
 * cannot disagree.
 */
#define RRL_RESULTS(X) \
    X(ALLOWED, "allowed", "Allowed", "allowed", \
      "Requests the store allowed") \
    X(DENIED, "denied", "Denied", "denied", "Requests the store denied") \
    X(EXEMPT, "exempt", "Exempt", "exempt", \
      "Requests from RateLimitExempt clients") \
    X(DRY_RUN_DENIED, "dry-run-denied", "DryRunDenied", "dry_run_denied", \
      "Requests RateLimitMode dry-run would have denied") \
    X(FALLBACK_ALLOWED, "fallback-allowed", "FallbackAllowed", \
      "fallback_allowed", \
      "Requests RateLimitOnError allow let through while Redis failed") \
    X(FALLBACK_DENIED, "fallback-denied", "FallbackDenied", \
      "fallback_denied", \
      "Requests RateLimitOnError deny refused while Redis failed") \
    X(LOCAL_ALLOWED, "local-allowed", "LocalAllowed", "local_allowed", \
      "Requests the local store allowed while Redis failed") \
    X(LOCAL_DENIED, "local-denied", "LocalDenied", "local_denied", \
      "Requests the local store denied while Redis failed")

typedef enum {
    RRL_RES_NONE = 0,             /* no limit decided (yet) */
#define RRL_RES_ENUM(e, text, key, json, help) RRL_RES_##e,
    RRL_RESULTS(RRL_RES_ENUM)
#undef RRL_RES_ENUM
    RRL_RES_MAX
} rrl_result_e;

/* The arithmetic of a limit, as both stores use it.  A concurrency limit
 * (RRL_ALG_CONCURRENCY) is N requests in flight: count N, period its
 * lease, interval the local store's epoch (half the lease) */
typedef struct {
    rrl_alg_e algorithm;
    apr_int64_t count;      /* N of N/PERIOD */
    apr_int64_t period;     /* PERIOD in microseconds (whole seconds) */
    apr_int64_t burst;      /* instantaneous capacity (gcra, token-bucket) */
    apr_int64_t interval;   /* ceil(period / count): time one unit refills */
    apr_int64_t unit;       /* sliding-window: granularity of elapsed time */
    int capped;             /* plans=: a gcra state that owes more than
                             * these numbers' burst owes their burst (the
                             * numbers changed; rrl_algo.c) */
} rrl_params_t;

typedef struct rrl_limit_t {
    const char *name;
    int auto_named;             /* name derived from where it stands */
    const char *directive;      /* RateLimit or RateLimitConcurrency */
    const char *rate_text;      /* RATE (or N) as written */
    int lease_given;            /* RateLimitConcurrency lease= */
    rrl_params_t p;
    apr_int64_t cost;
    rrl_phase_e phase;
    int ipv6_prefix;
    const char *key_text;       /* NULL: the client address */
    ap_expr_info_t *key;        /* NULL: the client address */
    const char *key_header;     /* key=%{HTTP:NAME}: NAME, read directly */
    int *statuses;              /* count=: spend only on these */
    int nstatuses;
    server_rec *server;         /* where it was defined */
    int in_vhost;
    int for_status;             /* beside SetHandler redis-ratelimit-status */
    const char *scope;          /* "VHOST:" or "", set in check_config */
    const char *file;
    unsigned line;
    /* its part of the script's ARGV in RESP, formatted once in
     * post_config: algorithm, count, period, burst, interval, unit, cost */
    const char *resp;
    apr_size_t resp_len;
    /* a gcra limit's spend, the script's short form: g, burst, interval,
     * cost (else NULL) */
    const char *resp_spend;
    apr_size_t resp_spend_len;
    /* its header and variable texts, also formatted once */
    const char *count_text;     /* "100" */
    const char *policy;         /* "\"name\";q=100;w=60" */
    const char *ietf_prefix;    /* "\"name\";r=" */
    rrl_plans_e plans;            /* plans= */
    const char *plans_path;       /* plans=FILE: the file */
    struct rrl_plan_file *plan_file;  /* its table, set in post_config */
    struct rrl_limit_stat *stat;  /* its counters, set in post_config */
    int pair;                     /* its (name, scope) among all, ditto */
} rrl_limit_t;

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
    int spent;                    /* the store spent cost (all allowed) */
    apr_int64_t until;            /* its clock: until when the spend matters
                                   * (now + reset), what a refund needs; of
                                   * a concurrency slot: when it was taken
                                   * or last renewed */
    apr_uint64_t ticket;          /* a concurrency slot's own name in the
                                   * store, unique to its request */
    /* plans=: its plan's key in Redis (plans=redis; NULL otherwise), and
     * what the plan said; p points to the plan's numbers when one applied */
    const char *plan_key;
    apr_size_t plan_keylen;
    rrl_plan_e plan;
    /* the key's hash, computed when first needed (rrl_local_hash) */
    int hashed;
    apr_uint64_t h[2];
} rrl_item_t;

#endif /* RRL_H */
