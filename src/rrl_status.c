/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * SetHandler redis-ratelimit-status.
 */

#include "apr_atomic.h"
#include "apr_strings.h"

#include <string.h>

#include "http_core.h"
#include "http_protocol.h"

#include "rrl_private.h"
#include "rrl_status.h"
#include "rrl_algo.h"
#include "rrl_config.h"
#include "rrl_counters.h"
#include "rrl_limit.h"
#include "rrl_local.h"
#include "rrl_metrics.h"
#include "rrl_plan_file.h"
#include "rrl_redis.h"
#include "rrl_script.h"
#include "rrl_unblock.h"
#include "rrl_util.h"

#define RRL_TIME_FORMAT    "%A, %d-%b-%Y %H:%M:%S %Z"   /* as mod_status */

typedef enum {
    RRL_FMT_HTML = 0, RRL_FMT_AUTO, RRL_FMT_JSON, RRL_FMT_METRICS,
    RRL_FMT_HEALTH
} rrl_format_e;

/* The query words that pick a format ("": HTML, the default) */
static const char *const rrl_formats[] = {
    "", "auto", "json", "metrics", "health", NULL
};

static const char *rrl_json_string(apr_pool_t *p, const char *s)
{
    char *out = apr_palloc(p, 6 * strlen(s) + 3), *o = out;

    *o++ = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        }
        else if (c < 0x20 || c == 0x7f) {
            o += apr_snprintf(o, 7, "\\u%04x", c);
        }
        else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

static const char *rrl_html(apr_pool_t *p, const char *s)
{
    return ap_escape_html(p, s);
}

/* What the limits table shows of a pair besides its counters */
typedef struct {
    const rrl_limit_t *l;         /* the first of the pair */
    rrl_limit_stat_t *st;
    const char *burst;            /* "" where it has no meaning */
    const char *key;              /* the key expression */
    const char *defined;          /* "FILE:LINE" each, joined */
    const char *rate;             /* RATE, or a concurrency limit's N */
    int slots;                    /* a concurrency limit */
    const char *plans;            /* "redis", "FILE (N plans, room for M)",
                                   * or "" */
} rrl_row_t;

/* One row per (name, virtual host) pair of the configuration, each with
 * the places of its RateLimit lines, every text made by quote (NULL: as
 * it is) and joined with sep */
static rrl_row_t *rrl_status_rows(request_rec *r, const char *sep,
                                  const char *(*quote)(apr_pool_t *,
                                                       const char *),
                                  int *nrows)
{
    const apr_array_header_t *pairs = rrl_limit_pairs();
    const apr_array_header_t *all = rrl_limit_all();
    rrl_row_t *rows;
    int i, n = pairs ? pairs->nelts : 0;

    rows = apr_pcalloc(r->pool, sizeof(*rows) * (n ? n : 1));
    for (i = 0; i < n; i++) {
        const rrl_limit_t *l = APR_ARRAY_IDX(pairs, i, const rrl_limit_t *);
        int bursty = l->p.algorithm == RRL_ALG_GCRA
                     || l->p.algorithm == RRL_ALG_TOKEN_BUCKET;

        rows[i].l = l;
        rows[i].st = l->stat;
        rows[i].burst = bursty ? rrl_util_i64(r->pool, l->p.burst) : "";
        rows[i].key = l->key_text ? l->key_text : "%{REMOTE_ADDR}";
        rows[i].slots = l->p.algorithm == RRL_ALG_CONCURRENCY;
        rows[i].rate = rows[i].slots
            ? apr_psprintf(r->pool, "%s at once, lease %" APR_TIME_T_FMT "s",
                           l->rate_text, apr_time_sec(l->p.period))
            : l->rate_text;
        rows[i].plans = l->plans == RRL_PLANS_REDIS ? "redis" : "";
        if (l->plans == RRL_PLANS_FILE && l->plan_file) {
            rrl_plan_file_stats_t ps;

            rrl_plan_file_stats(l->plan_file, &ps);
            rows[i].plans = apr_psprintf(r->pool, "%s (%u plans, room for "
                                         "%u)",
                                         rrl_plan_file_path(l->plan_file),
                                         ps.entries, ps.capacity);
        }
    }
    for (i = 0; all && i < all->nelts; i++) {
        const rrl_limit_t *l = APR_ARRAY_IDX(all, i, const rrl_limit_t *);
        const char *at = apr_psprintf(r->pool, "%s:%u", l->file, l->line);

        if (l->pair < 0 || l->pair >= n) {
            continue;
        }
        at = quote ? quote(r->pool, at) : at;
        rows[l->pair].defined = rows[l->pair].defined
            ? apr_pstrcat(r->pool, rows[l->pair].defined, sep, at, NULL) : at;
    }
    *nrows = n;
    return rows;
}

/* The HTML page's table of each Redis */
static void rrl_status_html_redis(request_rec *r)
{
    int i;

    ap_rputs("<h2>Redis</h2>\n", r);
    if (!rrl_redis_backends()->nelts) {
        ap_rputs("<p>No <code>RateLimitRedis</code>: limits are kept in this "
                 "server's shared memory.</p>\n", r);
    }
    else {
        ap_rputs("<table>\n<tr><th>URL</th><th>State</th><th>Since</th>"
                 "<th>Last error</th><th>Connections</th>"
                 "<th>Pool (per child)</th></tr>\n", r);
        for (i = 0; i < rrl_redis_backends()->nelts; i++) {
            rrl_backend_t *be = APR_ARRAY_IDX(rrl_redis_backends(), i,
                                              rrl_backend_t *);
            apr_time_t at;
            const char *err = rrl_counters_last_error(r->pool, be->shared,
                                                      &at);

            ap_rvputs(r, "<tr><td>", ap_escape_html(r->pool, be->u->masked),
                      "</td><td>", be->shared->down ? "<b>down</b>" : "up",
                      "</td><td>", ap_ht_time(r->pool, be->shared->since,
                                              RRL_TIME_FORMAT, 0),
                      "</td><td>", *err ? apr_pstrcat(r->pool,
                          ap_escape_html(r->pool, err), " (",
                          ap_ht_time(r->pool, at, RRL_TIME_FORMAT, 0),
                          ")", NULL) : "none", "</td>", NULL);
            ap_rprintf(r, "<td>%u open</td><td>max=%d keep=%d ttl=%"
                       APR_TIME_T_FMT "s</td></tr>\n",
                       apr_atomic_read32(&be->shared->connections),
                       be->pool_max, be->pool_keep,
                       apr_time_sec(be->pool_ttl));
        }
        ap_rputs("</table>\n", r);
    }
}

/* The HTML page's table of each (limit, virtual host) pair */
static void rrl_status_html_limits(request_rec *r)
{
    rrl_row_t *rows;
    int i, nrows;

    ap_rputs("<h2>Limits</h2>\n<table>\n<tr><th>Limit</th>"
             "<th>Virtual host</th><th>Rate</th><th>Burst</th>"
             "<th>Algorithm</th><th>Key</th><th>Defined at</th>"
             "<th>Allowed</th><th>Denied</th><th>Dry-run denied</th>"
             "<th>Plans</th><th>Decided by a plan</th><th>Plan errors</th>"
             "<th>In flight</th><th>Peak</th></tr>\n", r);
    rows = rrl_status_rows(r, "<br>", rrl_html, &nrows);
    for (i = 0; i < nrows; i++) {
        const rrl_row_t *w = &rows[i];

        ap_rvputs(r, "<tr><td>", ap_escape_html(r->pool, w->st->name),
                  "</td><td>", w->st->vhost[0]
                  ? ap_escape_html(r->pool, w->st->vhost) : "(all)",
                  "</td><td>", ap_escape_html(r->pool, w->rate),
                  "</td><td class=\"n\">", w->burst, "</td><td>",
                  rrl_algo_names[w->l->p.algorithm], "</td><td><code>",
                  ap_escape_html(r->pool, w->key), "</code></td><td>",
                  w->defined ? w->defined : "", "</td>", NULL);
        ap_rprintf(r, "<td class=\"n\">%" APR_UINT64_T_FMT "</td>"
                   "<td class=\"n\">%" APR_UINT64_T_FMT "</td>"
                   "<td class=\"n\">%" APR_UINT64_T_FMT "</td><td>%s</td>"
                   "<td class=\"n\">%" APR_UINT64_T_FMT "</td>"
                   "<td class=\"n\">%" APR_UINT64_T_FMT "</td>",
                   apr_atomic_read64(&w->st->allowed),
                   apr_atomic_read64(&w->st->denied),
                   apr_atomic_read64(&w->st->dry_run_denied),
                   ap_escape_html(r->pool, w->plans),
                   apr_atomic_read64(&w->st->plan_decisions),
                   apr_atomic_read64(&w->st->plan_errors));
        ap_rputs(w->slots ? apr_psprintf(r->pool, "<td class=\"n\">%u</td>"
                                         "<td class=\"n\">%u</td></tr>\n",
                                         apr_atomic_read32(&w->st->in_flight),
                                         apr_atomic_read32(&w->st->peak))
                          : "<td></td><td></td></tr>\n", r);
    }
    ap_rputs("</table>\n", r);
}

static void rrl_status_html(request_rec *r, const rrl_snapshot_t *sn)
{
    apr_time_t now = apr_time_now();
    rrl_local_stats_t ls;
    int i;

    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_rvputs(r, DOCTYPE_HTML_4_01, "<html><head>\n"
              "<title>Rate limiting status</title>\n<style>\n"
              "table { border-collapse: collapse; }\n"
              "th, td { border: 1px solid #999; padding: 2px 8px; "
              "text-align: left; vertical-align: top; }\n"
              "td.n { text-align: right; }\n"
              "</style>\n</head><body>\n<h1>Rate limiting status for ",
              ap_escape_html(r->pool, ap_get_server_name(r)), "</h1>\n\n",
              NULL);
    ap_rvputs(r, "<dl><dt>Server Version: ",
              ap_escape_html(r->pool, ap_get_server_description()),
              "</dt>\n<dt>Module: mod_redis_ratelimit/" RRL_VERSION "</dt>\n"
              "<dt>Current Time: ", ap_ht_time(r->pool, now,
                                               RRL_TIME_FORMAT, 0),
              "</dt>\n<dt>Counting since: ",
              ap_ht_time(r->pool, rrl_counters_started(), RRL_TIME_FORMAT,
                         0), "</dt>\n<dt>Script SHA-1: ", rrl_script_sha,
              "</dt>\n", NULL);
    rrl_local_stats(&ls);
    if (ls.allocated) {
        ap_rprintf(r, "<dt>Local store: %" APR_SIZE_T_FMT " bytes, room for "
                   "%" APR_UINT64_T_FMT " keys, %" APR_UINT64_T_FMT " in "
                   "use; %" APR_UINT64_T_FMT " entries given up for other "
                   "keys, %" APR_UINT64_T_FMT " of them still holding "
                   "state</dt>\n</dl>\n\n", ls.bytes, ls.capacity,
                   ls.in_use, ls.evictions, ls.live_evictions);
    }
    else {
        ap_rputs("<dt>Local store: none (every limit is kept in Redis, "
                 "with RateLimitOnError allow or deny)</dt>\n</dl>\n\n", r);
    }

    rrl_status_html_redis(r);
    ap_rputs("\n<h2>Requests</h2>\n<table>\n", r);
    for (i = 0; i < RRL_CTR_MAX; i++) {
        ap_rprintf(r, "<tr><td>%s</td><td class=\"n\">%" APR_UINT64_T_FMT
                   "</td><td>%s</td></tr>\n", rrl_counters_info[i].key,
                   sn->n[i], rrl_counters_info[i].help);
    }
    ap_rputs("</table>\n\n<h2>Redis latency</h2>\n", r);
    ap_rprintf(r, "<p>%" APR_UINT64_T_FMT " round trips, average %.3f ms, "
               "maximum %.3f ms</p>\n<table>\n<tr><th>Up to</th>"
               "<th>Round trips</th></tr>\n", sn->lat_count,
               sn->lat_count ? sn->lat_sum / 1000.0 / sn->lat_count : 0.0,
               sn->lat_max / 1000.0);
    for (i = 0; i < RRL_LAT_BUCKETS; i++) {
        ap_rprintf(r, "<tr><td class=\"n\">%s</td><td class=\"n\">%"
                   APR_UINT64_T_FMT "</td></tr>\n", i < RRL_LAT_BUCKETS - 1
                   ? apr_psprintf(r->pool, "%g ms",
                                  rrl_counters_lat_bounds[i] / 1e3)
                   : "more", sn->lat[i]);
    }
    ap_rputs("</table>\n\n", r);
    rrl_status_html_limits(r);
    ap_rputs("</body></html>\n", r);
}

static void rrl_status_auto(request_rec *r, const rrl_snapshot_t *sn)
{
    rrl_local_stats_t ls;
    rrl_row_t *rows;
    int i, nrows;

    ap_set_content_type(r, "text/plain; charset=utf-8");
    ap_rvputs(r, "Version: " RRL_VERSION "\nScriptSHA: ", rrl_script_sha,
              "\n", NULL);
    ap_rprintf(r, "Uptime: %" APR_TIME_T_FMT "\n",
               apr_time_sec(apr_time_now() - rrl_counters_started()));
    rrl_local_stats(&ls);
    ap_rprintf(r, "LocalStoreBytes: %" APR_SIZE_T_FMT "\n"
               "LocalStoreCapacity: %" APR_UINT64_T_FMT "\n"
               "LocalStoreKeysInUse: %" APR_UINT64_T_FMT "\n"
               "LocalStoreEvictions: %" APR_UINT64_T_FMT "\n"
               "LocalStoreLiveEvictions: %" APR_UINT64_T_FMT "\n",
               ls.bytes, ls.capacity, ls.in_use, ls.evictions,
               ls.live_evictions);
    for (i = 0; i < rrl_redis_backends()->nelts; i++) {
        rrl_backend_t *be = APR_ARRAY_IDX(rrl_redis_backends(), i,
                                          rrl_backend_t *);
        apr_time_t at;
        const char *err = rrl_counters_last_error(r->pool, be->shared, &at);

        ap_rprintf(r, "Redis[%d] URL: %s\nRedis[%d] Up: %d\n"
                   "Redis[%d] Since: %" APR_TIME_T_FMT "\n"
                   "Redis[%d] Connections: %u\nRedis[%d] LastError: %s\n",
                   i, be->u->masked, i, !be->shared->down,
                   i, apr_time_sec(be->shared->since),
                   i, apr_atomic_read32(&be->shared->connections), i, err);
    }
    for (i = 0; i < RRL_CTR_MAX; i++) {
        ap_rprintf(r, "%s: %" APR_UINT64_T_FMT "\n", rrl_counters_info[i].key,
                   sn->n[i]);
    }
    ap_rprintf(r, "RedisLatencyAvgMs: %.3f\nRedisLatencyMaxMs: %.3f\n",
               sn->lat_count ? sn->lat_sum / 1000.0 / sn->lat_count : 0.0,
               sn->lat_max / 1000.0);
    rows = rrl_status_rows(r, ", ", NULL, &nrows);
    for (i = 0; i < nrows; i++) {
        const rrl_row_t *w = &rows[i];
        rrl_limit_stat_t *st = w->st;
        const char *id;

        id = st->vhost[0] ? apr_pstrcat(r->pool, st->name, "@", st->vhost,
                                        NULL) : st->name;
        ap_rprintf(r, "Limit[%s] Rate: %s\n", id, w->l->rate_text);
        if (*w->burst) {
            ap_rprintf(r, "Limit[%s] Burst: %s\n", id, w->burst);
        }
        ap_rprintf(r, "Limit[%s] Algorithm: %s\nLimit[%s] Key: %s\n"
                   "Limit[%s] Defined: %s\n"
                   "Limit[%s] Allowed: %" APR_UINT64_T_FMT "\n"
                   "Limit[%s] Denied: %" APR_UINT64_T_FMT "\n"
                   "Limit[%s] DryRunDenied: %" APR_UINT64_T_FMT "\n",
                   id, rrl_algo_names[w->l->p.algorithm], id, w->key,
                   id, w->defined ? w->defined : "",
                   id, apr_atomic_read64(&st->allowed),
                   id, apr_atomic_read64(&st->denied),
                   id, apr_atomic_read64(&st->dry_run_denied));
        if (*w->plans) {
            ap_rprintf(r, "Limit[%s] Plans: %s\nLimit[%s] PlanDecisions: %"
                       APR_UINT64_T_FMT "\nLimit[%s] PlanErrors: %"
                       APR_UINT64_T_FMT "\n", id, w->plans, id,
                       apr_atomic_read64(&st->plan_decisions), id,
                       apr_atomic_read64(&st->plan_errors));
        }
        if (w->slots) {
            ap_rprintf(r, "Limit[%s] LeaseSeconds: %" APR_TIME_T_FMT "\n"
                       "Limit[%s] InFlight: %u\nLimit[%s] Peak: %u\n", id,
                       apr_time_sec(w->l->p.period), id,
                       apr_atomic_read32(&st->in_flight), id,
                       apr_atomic_read32(&st->peak));
        }
    }
}

static void rrl_status_json(request_rec *r, const rrl_snapshot_t *sn)
{
    const char *sep = "";
    rrl_local_stats_t ls;
    rrl_row_t *rows;
    int i, nrows;

    rrl_local_stats(&ls);
    ap_set_content_type(r, "application/json");
    ap_rprintf(r, "{\"version\":\"" RRL_VERSION "\",\"script_sha\":\"%s\","
               "\"uptime_seconds\":%" APR_TIME_T_FMT ",\"local_store\":"
               "{\"allocated\":%s,\"bytes\":%" APR_SIZE_T_FMT ","
               "\"capacity_keys\":%" APR_UINT64_T_FMT ",\"keys_in_use\":%"
               APR_UINT64_T_FMT ",\"evictions\":%" APR_UINT64_T_FMT ","
               "\"live_evictions\":%" APR_UINT64_T_FMT "},\"redis\":[",
               rrl_script_sha,
               apr_time_sec(apr_time_now() - rrl_counters_started()),
               ls.allocated ? "true" : "false", ls.bytes, ls.capacity,
               ls.in_use, ls.evictions, ls.live_evictions);
    for (i = 0; i < rrl_redis_backends()->nelts; i++) {
        rrl_backend_t *be = APR_ARRAY_IDX(rrl_redis_backends(), i,
                                          rrl_backend_t *);
        apr_time_t at;
        const char *err = rrl_counters_last_error(r->pool, be->shared, &at);

        ap_rprintf(r, "%s{\"url\":%s,\"up\":%s,\"since\":%" APR_TIME_T_FMT
                   ",\"last_error\":%s,\"last_error_at\":%" APR_TIME_T_FMT
                   ",\"connections\":%u,\"pool\":{\"max\":%d,\"keep\":%d,"
                   "\"ttl_seconds\":%" APR_TIME_T_FMT "}}", sep,
                   rrl_json_string(r->pool, be->u->masked),
                   be->shared->down ? "false" : "true",
                   apr_time_sec(be->shared->since),
                   rrl_json_string(r->pool, err), apr_time_sec(at),
                   apr_atomic_read32(&be->shared->connections), be->pool_max,
                   be->pool_keep, apr_time_sec(be->pool_ttl));
        sep = ",";
    }
    ap_rputs("],\"counters\":{", r);
    for (i = 0; i < RRL_CTR_MAX; i++) {
        ap_rprintf(r, "%s\"%s\":%" APR_UINT64_T_FMT, i ? "," : "",
                   rrl_counters_info[i].json, sn->n[i]);
    }
    ap_rprintf(r, "},\"redis_latency\":{\"count\":%" APR_UINT64_T_FMT
               ",\"sum_seconds\":%.6f,\"avg_ms\":%.3f,\"max_ms\":%.3f,"
               "\"buckets_cumulative\":false,\"buckets\":{",
               sn->lat_count, sn->lat_sum / 1e6,
               sn->lat_count ? sn->lat_sum / 1000.0 / sn->lat_count : 0.0,
               sn->lat_max / 1000.0);
    for (i = 0; i < RRL_LAT_BUCKETS; i++) {
        ap_rprintf(r, "%s\"%s\":%" APR_UINT64_T_FMT, i ? "," : "",
                   rrl_metrics_le(r->pool, i), sn->lat[i]);
    }
    ap_rputs("}},\"limits\":[", r);
    rows = rrl_status_rows(r, ",", rrl_json_string, &nrows);
    for (i = 0; i < nrows; i++) {
        const rrl_row_t *w = &rows[i];
        const rrl_limit_t *l = w->l;

        ap_rprintf(r, "%s{\"name\":%s,\"vhost\":%s,\"rate\":%s,"
                   "\"count\":%" APR_INT64_T_FMT ",\"period_seconds\":%"
                   APR_INT64_T_FMT ",\"burst\":%s,\"algorithm\":\"%s\","
                   "\"key\":%s,\"defined\":[%s],\"allowed\":%"
                   APR_UINT64_T_FMT ",\"denied\":%" APR_UINT64_T_FMT
                   ",\"dry_run_denied\":%" APR_UINT64_T_FMT ",\"plans\":%s,"
                   "\"plan_decisions\":%" APR_UINT64_T_FMT ",\"plan_errors\":%"
                   APR_UINT64_T_FMT, i ? "," : "",
                   rrl_json_string(r->pool, w->st->name),
                   rrl_json_string(r->pool, w->st->vhost),
                   rrl_json_string(r->pool, l->rate_text), l->p.count,
                   l->p.period / RRL_USEC_PER_SEC,
                   *w->burst ? w->burst : "null",
                   rrl_algo_names[l->p.algorithm],
                   rrl_json_string(r->pool, w->key),
                   w->defined ? w->defined : "",
                   apr_atomic_read64(&w->st->allowed),
                   apr_atomic_read64(&w->st->denied),
                   apr_atomic_read64(&w->st->dry_run_denied),
                   *w->plans ? rrl_json_string(r->pool, w->plans) : "null",
                   apr_atomic_read64(&w->st->plan_decisions),
                   apr_atomic_read64(&w->st->plan_errors));
        ap_rputs(w->slots ? apr_psprintf(
                     r->pool, ",\"lease_seconds\":%" APR_TIME_T_FMT
                     ",\"in_flight\":%u,\"peak\":%u}",
                     apr_time_sec(l->p.period),
                     apr_atomic_read32(&w->st->in_flight),
                     apr_atomic_read32(&w->st->peak)) : "}", r);
    }
    ap_rputs("]}\n", r);
}

/* ?health: 200 when limits can be decided by the configured store, 503
 * when it is Redis and Redis does not answer */
static int rrl_status_health(request_rec *r, const rrl_srv_conf_t *sc)
{
    rrl_backend_t *be = sc->backend;
    const char *err = NULL;

    ap_set_content_type(r, "text/plain; charset=utf-8");
    if (be) {
        const rrl_dir_conf_t *dc = ap_get_module_config(
            r->per_dir_config, &redis_ratelimit_module);

        rrl_redis_health(r, be, rrl_config_on_error_name(dc), &err);
    }
    if (err) {
        r->status = HTTP_SERVICE_UNAVAILABLE;
        ap_rvputs(r, "Redis unreachable: ", be->u->masked, ": ", err, "\n",
                  NULL);
    }
    else {
        ap_rputs("OK\n", r);
    }
    return OK;
}

int rrl_status_handler(request_rec *r)
{
    rrl_format_e fmt = RRL_FMT_HTML;
    rrl_snapshot_t sn;
    const char *arg;
    char *args, *tok, *state;

    if (!r->handler || strcmp(r->handler, RRL_STATUS_HANDLER) != 0) {
        return DECLINED;
    }
    r->allowed = (AP_METHOD_BIT << M_GET) | (AP_METHOD_BIT << M_POST);
    if (r->method_number == M_POST) {
        return rrl_unblock_post(r);
    }
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    args = apr_pstrdup(r->pool, r->args ? r->args : "");
    for (tok = apr_strtok(args, "&;", &state); tok;
         tok = apr_strtok(NULL, "&;", &state)) {
        int f = rrl_util_keyword(rrl_formats, tok);

        if (f > 0) {
            fmt = f;
        }
        else if (strncasecmp(tok, "refresh=", 8) == 0) {
            apr_int64_t t;

            arg = tok + 8;
            if (rrl_util_parse_int(arg, 0, 86400, &t)) {
                apr_table_setn(r->headers_out, "Refresh",
                               apr_psprintf(r->pool, "%d",
                                            t < 1 ? 1 : (int)t));
            }
        }
    }
    apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    if (fmt == RRL_FMT_HEALTH) {
        return rrl_status_health(r, ap_get_module_config(
            r->server->module_config, &redis_ratelimit_module));
    }
    if (r->header_only) {
        return OK;
    }
    rrl_counters_sweep(apr_time_now());   /* holds of killed children */
    rrl_counters_snapshot(&sn);
    switch (fmt) {
    case RRL_FMT_AUTO:
        rrl_status_auto(r, &sn);
        break;
    case RRL_FMT_JSON:
        rrl_status_json(r, &sn);
        break;
    case RRL_FMT_METRICS:
        rrl_metrics_write(r, &sn);
        break;
    default:
        rrl_status_html(r, &sn);
        break;
    }
    return OK;
}
