/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The Redis stack's facade: backends, decide and ping, the breaker.
 */

#include "apr_atomic.h"
#include "apr_hash.h"
#include "apr_strings.h"

#include <stdlib.h>
#include <string.h>

#include "http_main.h"
#include "ap_mpm.h"

#include "rrl_private.h"
#include "rrl_redis.h"
#include "rrl_config.h"
#include "rrl_counters.h"
#include "rrl_redis_cluster.h"
#include "rrl_script.h"

static apr_array_header_t *rrl_backends;    /* rrl_backend_t *: all used */

/* One EVALSHA decides the items, or one per slot in a Cluster */
static rrl_redis_rc_e rrl_redis_eval(request_rec *r, rrl_backend_t *be,
                                     rrl_item_t *items, int n,
                                     apr_int64_t *now, const char **errp)
{
    if (be->u->kind != RRL_REDIS_CLUSTER) {
        return rrl_redis_pipe_eval(r, be, be->node, 0, items, n, now, NULL,
                                   errp);
    }
    return rrl_redis_cluster_decide(r, be, items, n, now, errp);
}

/* PING, for ?health */
static rrl_redis_rc_e rrl_redis_ping(request_rec *r, rrl_backend_t *be,
                                     const char **errp)
{
    rrl_reply_t rep = { 0 };
    rrl_node_t *node = be->node;
    rrl_redis_rc_e rc;
    int ok;

    if (be->u->kind == RRL_REDIS_CLUSTER) {
        /* the Cluster answers when a node learnt from it answers */
        if ((*errp = rrl_redis_cluster_refresh(be, r->pool)) != NULL) {
            return RRL_REDIS_DOWN;
        }
        apr_thread_mutex_lock(be->mutex);
        node = be->nodes[0];
        apr_thread_mutex_unlock(be->mutex);
    }
    if ((rc = rrl_redis_pipe_call(r, be, node, "PING", RRL_RESP_PING,
                             sizeof(RRL_RESP_PING) - 1, 0, &rep, errp))
        != RRL_REDIS_OK) {
        return rc;
    }
    ok = rep.type == REDIS_REPLY_STATUS && strcmp(rep.str, "PONG") == 0;
    if (!ok) {
        *errp = rep.type == REDIS_REPLY_ERROR
                ? apr_psprintf(r->pool, "PING: %s", rep.str)
                : "PING: an unexpected reply";
    }
    return ok ? RRL_REDIS_OK : RRL_REDIS_WRONG;
}

/* Redis errors: at most one line a second per child, with the number of
 * those left out */
static void rrl_redis_log_error(request_rec *r, rrl_backend_t *be,
                                const char *on_error, const char *err)
{
    apr_time_t sec = apr_time_sec(apr_time_now());
    int suppressed = -1;

    apr_thread_mutex_lock(be->mutex);
    if (sec != be->log_second) {
        suppressed = be->log_suppressed;
        be->log_second = sec;
        be->log_suppressed = 0;
    }
    else {
        be->log_suppressed++;
    }
    apr_thread_mutex_unlock(be->mutex);
    if (suppressed >= 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, RRL_LOGNO(00013)
                      "%s: %s; deciding by RateLimitOnError %s%s",
                      be->u->masked, err, on_error,
                      suppressed > 0
                      ? apr_psprintf(r->pool, " (and %d more such errors in "
                                     "this child since the last line)",
                                     suppressed) : "");
    }
}

/* The circuit breaker of a child: after failures, it leaves Redis alone
 * for a growing pause, then one request probes it */
typedef enum {
    RRL_GATE_CLOSED = 0,     /* ask Redis */
    RRL_GATE_PROBE,          /* ask Redis: the first request after a pause */
    RRL_GATE_OPEN            /* do not: RateLimitOnError decides at once */
} rrl_gate_e;

#define RRL_BACKOFF_FIRST apr_time_from_msec(200)

#define RRL_BACKOFF_MAX   apr_time_from_sec(5)

static rrl_gate_e rrl_redis_breaker_gate(rrl_backend_t *be, apr_time_t now)
{
    rrl_gate_e gate = RRL_GATE_OPEN;

    if (apr_atomic_read32(&be->failures) == 0) {
        return RRL_GATE_CLOSED;
    }
    if ((apr_uint64_t)now < apr_atomic_read64(&be->quiet_until)) {
        return RRL_GATE_OPEN;
    }
    apr_thread_mutex_lock(be->mutex);
    if (be->failures == 0) {
        gate = RRL_GATE_CLOSED;
    }
    else if (now >= be->open_until
             && (!be->probing || now >= be->probe_deadline)) {
        /* one request probes; the others keep deciding without Redis */
        be->probing = 1;
        be->probe_deadline = now + be->connect_timeout
                             + 3 * be->command_timeout;
        apr_atomic_set64(&be->quiet_until, (apr_uint64_t)be->probe_deadline);
        gate = RRL_GATE_PROBE;
    }
    apr_thread_mutex_unlock(be->mutex);
    return gate;
}

static void rrl_redis_breaker_success(request_rec *r, rrl_backend_t *be)
{
    apr_time_t now;

    if (apr_atomic_read32(&be->failures) != 0) {
        apr_thread_mutex_lock(be->mutex);
        apr_atomic_set32(&be->failures, 0);
        be->probing = 0;
        apr_atomic_set64(&be->quiet_until, 0);
        apr_thread_mutex_unlock(be->mutex);
    }
    /* the first child to reach Redis again says so, once (it may not be
     * one that saw it fail) */
    if (apr_atomic_read32(&be->shared->down)
        && apr_atomic_cas32(&be->shared->down, 0, 1) == 1) {
        now = apr_time_now();
        ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, RRL_LOGNO(00018)
                      "%s answers again after %" APR_TIME_T_FMT " s; limits "
                      "are decided in Redis again", be->u->masked,
                      apr_time_sec(now - be->shared->since));
        be->shared->since = now;
    }
}

static void rrl_redis_breaker_failure(request_rec *r, rrl_backend_t *be,
                                      const char *on_error, const char *err)
{
    apr_interval_time_t pause;
    apr_uint32_t n;

    apr_thread_mutex_lock(be->mutex);
    n = apr_atomic_read32(&be->failures) + 1;
    if (n == 1) {
        rrl_counters_count(RRL_CTR_BREAKER_OPENINGS);
    }
    apr_atomic_set32(&be->failures, n);
    pause = n > 6 ? RRL_BACKOFF_MAX : RRL_BACKOFF_FIRST << (n - 1);
    pause = pause < RRL_BACKOFF_MAX ? pause : RRL_BACKOFF_MAX;
    be->open_until = apr_time_now() + pause;
    be->probing = 0;
    apr_atomic_set64(&be->quiet_until, (apr_uint64_t)be->open_until);
    apr_thread_mutex_unlock(be->mutex);

    rrl_counters_error(be->shared, err);
    /* the first child to lose Redis says so, once; the rest is counted */
    if (apr_atomic_cas32(&be->shared->down, 1, 0) == 0) {
        be->shared->since = apr_time_now();
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, RRL_LOGNO(00019)
                      "%s is lost (%s): RateLimitOnError %s decides until "
                      "it answers again; each child asks it again after a "
                      "pause growing from 200 ms to 5 s", be->u->masked,
                      err, on_error);
    }
    else {
        rrl_redis_log_error(r, be, on_error, err);
    }
}

/* What a call's end tells the breaker, the counters and the log */
static void rrl_redis_settle(request_rec *r, rrl_backend_t *be,
                             const char *on_error, rrl_redis_rc_e rc,
                             const char *err)
{
    switch (rc) {
    case RRL_REDIS_OK:
        rrl_redis_breaker_success(r, be);
        break;
    case RRL_REDIS_DOWN:
        rrl_counters_count(RRL_CTR_REDIS_ERRORS);
        rrl_redis_breaker_failure(r, be, on_error, err);
        break;
    case RRL_REDIS_WRONG:
        rrl_counters_count(RRL_CTR_REDIS_ERRORS);
        /* Redis is up: this answer was wrong (a key of another type,
         * say); no reason to leave Redis alone */
        rrl_redis_breaker_success(r, be);
        rrl_counters_error(be->shared, err);
        rrl_redis_log_error(r, be, on_error, err);
        break;
    }
}

/*
 * Decide the items in Redis, unless this child is leaving a failing Redis
 * alone for a while (then at once, without a network wait).  Failures are
 * logged and counted here; on_error names the RateLimitOnError that
 * decides instead.  RRL_REDIS_OK: the items have their outcome.
 */
rrl_redis_rc_e rrl_redis_decide(request_rec *r, rrl_backend_t *be,
                                const char *on_error, rrl_item_t *items,
                                int n, apr_int64_t *now)
{
    const char *err = NULL;
    rrl_redis_rc_e rc;

    if (rrl_redis_breaker_gate(be, *now) == RRL_GATE_OPEN) {
        return RRL_REDIS_DOWN;
    }
    rc = rrl_redis_eval(r, be, items, n, now, &err);
    rrl_redis_settle(r, be, on_error, rc, err);
    return rc;
}

/* For ?health: can this child reach Redis?  RRL_REDIS_OK, or *errp */
rrl_redis_rc_e rrl_redis_health(request_rec *r, rrl_backend_t *be,
                                const char *on_error, const char **errp)
{
    rrl_redis_rc_e rc;
    apr_time_t at;

    *errp = NULL;
    if (rrl_redis_breaker_gate(be, apr_time_now()) == RRL_GATE_OPEN) {
        /* a child that is leaving Redis alone answers at once */
        *errp = apr_pstrcat(r->pool, "no answer lately (",
                            rrl_counters_last_error(r->pool, be->shared, &at),
                            ")", NULL);
        return RRL_REDIS_DOWN;
    }
    rc = rrl_redis_ping(r, be, errp);
    rrl_redis_settle(r, be, on_error, rc, *errp);
    return rc;
}

/* One backend per distinct URL, timeouts and pool settings */
static rrl_backend_t *rrl_backend_for(apr_pool_t *pconf, apr_hash_t *seen,
                                      const rrl_srv_conf_t *sc, int threads)
{
    rrl_backend_t *be = apr_pcalloc(pconf, sizeof(*be));
    rrl_backend_t *known;
    const char *id;

    be->u = sc->redis;
    be->connect_timeout = sc->connect_timeout != RRL_UNSET
                          ? sc->connect_timeout : RRL_DEFAULT_TIMEOUT;
    be->command_timeout = sc->command_timeout != RRL_UNSET
                          ? sc->command_timeout : RRL_DEFAULT_TIMEOUT;
    be->pool_max = sc->pool_max != RRL_UNSET ? sc->pool_max : threads;
    be->pool_keep = sc->pool_keep != RRL_UNSET ? sc->pool_keep : 0;
    if (be->pool_keep > be->pool_max) {
        be->pool_keep = be->pool_max;
    }
    be->pool_ttl = sc->pool_ttl != RRL_UNSET ? sc->pool_ttl
                                             : RRL_DEFAULT_POOL_TTL;
    /* a round trip carries a call of each thread that runs requests, as
     * each waits for its own (prefork: 1, so that its many children keep
     * no room for batches that never form), at most RRL_PIPE_MAX; calls
     * beyond wait for the next.  mod_http2 runs requests in workers of
     * its own besides the MPM's threads: then RRL_PIPE_MAX */
    be->batch_cap = ap_find_linked_module("mod_http2.c")
                    || threads > RRL_PIPE_MAX ? RRL_PIPE_MAX : threads;
    id = apr_psprintf(pconf, "%s|%" APR_TIME_T_FMT "|%" APR_TIME_T_FMT
                      "|%d|%d|%" APR_TIME_T_FMT, be->u->url,
                      be->connect_timeout, be->command_timeout, be->pool_max,
                      be->pool_keep, be->pool_ttl);
    if ((known = apr_hash_get(seen, id, APR_HASH_KEY_STRING)) != NULL) {
        return known;
    }
    apr_hash_set(seen, id, APR_HASH_KEY_STRING, be);
    APR_ARRAY_PUSH(rrl_backends, rrl_backend_t *) = be;
    return be;
}


/* The Redis each server uses, one backend per distinct URL and settings
 * (max= defaults to ThreadsPerChild), and its slot on the status page */
int rrl_redis_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                          server_rec *s)
{
    apr_hash_t *seen = apr_hash_make(ptemp);
    const char *err;
    server_rec *vs;
    int threads = 1, i;

    if (ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) != APR_SUCCESS
        || threads < 1) {
        threads = 1;
    }
    rrl_backends = apr_array_make(pconf, 2, sizeof(rrl_backend_t *));
    for (vs = s; vs; vs = vs->next) {
        rrl_srv_conf_t *vsc = ap_get_module_config(vs->module_config,
                                                   &redis_ratelimit_module);

        vsc->backend = (vsc->redis && vsc->redis != &rrl_url_off)
                       ? rrl_backend_for(pconf, seen, vsc, threads) : NULL;
    }
    for (i = 0; i < rrl_backends->nelts; i++) {
        rrl_backend_t *be = APR_ARRAY_IDX(rrl_backends, i, rrl_backend_t *);

        be->shared = rrl_counters_backend(be->u);
        if (be->u->tls && (err = rrl_tls_create(pconf, be->u, &be->tls))) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RRL_LOGNO(00014)
                         "%s: cannot set up TLS: %s", be->u->masked, err);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        if (be->u->tls && !be->u->verify) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RRL_LOGNO(00040)
                         "%s: verify=off: the server's certificate and name "
                         "are not checked, so whoever is on the way to it "
                         "can read and change what the module sends and "
                         "hears; give the server's CA with cacert= instead",
                         be->u->masked);
        }
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, RRL_LOGNO(00015)
                     "limits kept in %s (connect %" APR_TIME_T_FMT " ms, "
                     "command %" APR_TIME_T_FMT " ms, up to %d connections "
                     "per child), script %s", be->u->masked,
                     apr_time_as_msec(be->connect_timeout),
                     apr_time_as_msec(be->command_timeout), be->pool_max,
                     rrl_script_sha);
    }
    return OK;
}

/*
 * After the configuration is read, the parent PINGs each distinct Redis
 * URL once (its first address for a Sentinel or a Cluster), bounded by
 * its RateLimitRedisTimeout: one that cannot be reached, or refuses the
 * password, is one warning now rather than a surprise at the first
 * request.  Never fatal: RateLimitOnError decides until it answers.
 */
void rrl_redis_startup_check(apr_pool_t *ptemp, server_rec *s)
{
    apr_hash_t *seen = apr_hash_make(ptemp);
    int i;

    for (i = 0; rrl_backends && i < rrl_backends->nelts; i++) {
        rrl_backend_t *be = APR_ARRAY_IDX(rrl_backends, i, rrl_backend_t *);
        const rrl_redis_url_t *u = be->u;
        const char *host = u->host, *err = NULL;
        const char *ping[1] = { "PING" };
        int port = u->port, db = u->db;
        redisReply *reply;
        rrl_sock_t sock;

        if (apr_hash_get(seen, u->url, APR_HASH_KEY_STRING)) {
            continue;
        }
        apr_hash_set(seen, u->url, APR_HASH_KEY_STRING, u);
        if (u->kind == RRL_REDIS_SENTINEL || u->kind == RRL_REDIS_CLUSTER) {
            const rrl_addr_t *a = &APR_ARRAY_IDX(u->addrs, 0, rrl_addr_t);

            host = a->host;
            port = a->port;
            db = 0;                /* neither takes SELECT */
        }
        if ((err = rrl_redis_conn_open(be, ptemp, u->kind == RRL_REDIS_UNIX
                                                  ? NULL : host, port, db,
                                       NULL, &sock)) == NULL) {
            if (!(reply = rrl_redis_conn_command(be, ptemp, &sock, 1, ping,
                                                 &err))) {
                /* err says why */
            }
            else if (reply->type == REDIS_REPLY_ERROR
                     && strncmp(reply->str, "NOPERM", 6) == 0) {
                /* an ACL user without PING: it answered, authenticated */
            }
            else if (reply->type != REDIS_REPLY_STATUS
                     || strcmp(reply->str, "PONG") != 0) {
                err = apr_psprintf(ptemp, "PING: %s",
                                   reply->type == REDIS_REPLY_ERROR
                                   ? reply->str : "an unexpected reply");
            }
            if (reply) {
                freeReplyObject(reply);
            }
            rrl_sock_close(&sock);
        }
        if (err) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RRL_LOGNO(00023)
                         "%s does not answer at startup (%s); the server "
                         "starts, and RateLimitOnError decides for its "
                         "limits until it answers", u->masked, err);
        }
    }
}

/* This child's part of each backend; how many backends there are */
int rrl_redis_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv;
    int i;

    for (i = 0; rrl_backends && i < rrl_backends->nelts; i++) {
        rrl_backend_t *be = APR_ARRAY_IDX(rrl_backends, i, rrl_backend_t *);

        /* filled lazily; idle connections beyond keep close after ttl;
         * waiting for a free one takes no longer than a command may.  A
         * Cluster's nodes get theirs when the slot map names them */
        rv = apr_thread_mutex_create(&be->mutex, APR_THREAD_MUTEX_DEFAULT,
                                     pchild);
        if (rv == APR_SUCCESS && be->u->kind == RRL_REDIS_CLUSTER) {
            be->slots = apr_pcalloc(pchild, sizeof(*be->slots) * RRL_SLOTS);
            rv = apr_pool_create(&be->cpool, pchild);
        }
        else if (rv == APR_SUCCESS) {
            /* a Sentinel's node is the master, once the Sentinels say */
            int known = be->u->kind != RRL_REDIS_SENTINEL;

            rv = rrl_redis_conn_node_create(be, pchild, known && be->u->host
                                                        ? be->u->host : "",
                                            known ? be->u->port : 0,
                                            &be->node);
        }
        if (rv != APR_SUCCESS) {
            /* a shortage of this child's (memory, mutexes): it exits, and
             * the parent makes others, more slowly while they fail too;
             * the server stays up */
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00016)
                         "%s: cannot create this child's connection pool; "
                         "the child exits", be->u->masked);
            exit(APEXIT_CHILDSICK);
        }
    }
    return rrl_backends ? rrl_backends->nelts : 0;
}

const apr_array_header_t *rrl_redis_backends(void)
{
    return rrl_backends;
}
