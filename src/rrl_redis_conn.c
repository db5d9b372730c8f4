/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * Connections to Redis: connect, Sentinel, the pool of a node.
 */

#include "apr_atomic.h"
#include "apr_strings.h"

#include <stdlib.h>
#include <string.h>

#include "http_main.h"

#include "rrl_private.h"
#include "rrl_redis_conn.h"
#include "rrl_resp.h"
#include "rrl_util.h"

static struct timeval rrl_timeval(apr_interval_time_t t)
{
    struct timeval tv;

    tv.tv_sec = (long)apr_time_sec(t);
    tv.tv_usec = (long)apr_time_usec(t);
    return tv;
}

/* AUTH or SELECT on a new connection: NULL, or what went wrong */
static const char *rrl_redis_setup(apr_pool_t *p, redisContext *c, int argc,
                                   const char **argv)
{
    redisReply *reply = redisCommandArgv(c, argc, argv, NULL);
    const char *err = NULL;

    if (!reply) {
        return apr_psprintf(p, "%s: %s", argv[0], c->errstr);
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        err = apr_psprintf(p, "%s: %s", argv[0], reply->str);
    }
    freeReplyObject(reply);
    return err;
}

/*
 * Connect to one server: timeouts, keepalive, AUTH; SELECT where asked.
 * host NULL: the URL's unix socket.  Replies on the context are hiredis'
 * own until rrl_redis_conn_connect switches them to rrl_reply_t.
 */
redisContext *rrl_redis_conn_open(const rrl_backend_t *be, apr_pool_t *p,
                                  const char *host, int port, int db,
                                  const char **errp)
{
    const rrl_redis_url_t *u = be->u;
    struct timeval tv = rrl_timeval(be->connect_timeout);
    const char *err = NULL;
    redisContext *c;

    c = !host ? redisConnectUnixWithTimeout(u->path, tv)
              : redisConnectWithTimeout(host, port, tv);
    if (!c) {
        *errp = "connect: out of memory";
        return NULL;
    }
    if (c->err) {
        err = apr_psprintf(p, "connect to %s:%d: %s", host ? host : u->path,
                           port, c->errstr);
    }
#ifdef HAVE_HIREDIS_SSL
    else if (u->kind == RRL_REDIS_TLS
             && redisInitiateSSLWithContext(c, be->ssl) != REDIS_OK) {
        err = apr_psprintf(p, "TLS: %s", c->errstr);
    }
#endif
    else if (redisSetTimeout(c, rrl_timeval(be->command_timeout))
             != REDIS_OK) {
        err = apr_psprintf(p, "setting the timeout: %s", c->errstr);
    }
    else {
        if (host) {
            redisEnableKeepAlive(c);     /* best effort */
        }
        if (u->password) {
            const char *auth[3] = { "AUTH", u->user, u->password };

            if (!u->user) {
                auth[1] = u->password;
            }
            err = rrl_redis_setup(p, c, u->user ? 3 : 2, auth);
        }
        if (!err && db) {
            const char *sel[2] = { "SELECT", apr_itoa(p, db) };

            err = rrl_redis_setup(p, c, 2, sel);
        }
    }
    if (err) {
        redisFree(c);
        *errp = err;
        return NULL;
    }
    return c;
}

/* Sentinel: forget the master known as generation gen (it failed or says
 * it is not the master any more); the next connection asks the Sentinels,
 * and pooled connections to it are closed when next taken */
void rrl_redis_conn_forget_master(rrl_backend_t *be, rrl_node_t *node,
                                  apr_uint32_t gen)
{
    apr_thread_mutex_lock(be->mutex);
    if (node->gen == gen && node->host[0]) {
        node->host[0] = '\0';
        apr_atomic_inc32(&node->gen);
    }
    apr_thread_mutex_unlock(be->mutex);
}

/* Sentinel: the master's address, asked of each Sentinel in turn when not
 * known.  NULL, or what went wrong */
static const char *rrl_sentinel_master(rrl_backend_t *be, rrl_node_t *node,
                                       apr_pool_t *p, char *host, int *port,
                                       apr_uint32_t *gen)
{
    const rrl_redis_url_t *u = be->u;
    const char *argv[3] = { "SENTINEL", "get-master-addr-by-name", u->master };
    const char *err = "no Sentinel answered";
    apr_int64_t mport;
    int i;

    apr_thread_mutex_lock(be->mutex);
    apr_cpystrn(host, node->host, sizeof(node->host));
    *port = node->port;
    *gen = node->gen;
    apr_thread_mutex_unlock(be->mutex);
    if (*host) {
        return NULL;
    }
    for (i = 0; i < u->addrs->nelts; i++) {
        const rrl_addr_t *a = &APR_ARRAY_IDX(u->addrs, i, rrl_addr_t);
        redisContext *c = rrl_redis_conn_open(be, p, a->host, a->port, 0,
                                              &err);
        redisReply *reply;

        if (!c) {
            continue;
        }
        reply = redisCommandArgv(c, 3, argv, NULL);
        if (!reply) {
            err = apr_psprintf(p, "Sentinel %s:%d: %s", a->host, a->port,
                               c->errstr);
        }
        else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
                 || reply->element[0]->type != REDIS_REPLY_STRING
                 || reply->element[1]->type != REDIS_REPLY_STRING
                 || !reply->element[0]->len
                 || reply->element[0]->len >= sizeof(node->host)
                 || !rrl_util_parse_int(reply->element[1]->str, 1, 65535,
                                        &mport)) {
            err = apr_psprintf(p, "Sentinel %s:%d does not know master %s",
                               a->host, a->port, u->master);
        }
        else {
            int changed;

            apr_thread_mutex_lock(be->mutex);
            apr_cpystrn(node->host, reply->element[0]->str,
                        sizeof(node->host));
            node->port = (int)mport;
            apr_cpystrn(host, node->host, sizeof(node->host));
            *port = node->port;
            *gen = node->gen;
            /* the first master this child learns, and every change */
            changed = node->last_port != node->port
                      || strcmp(node->last_host, node->host) != 0;
            if (changed) {
                apr_cpystrn(node->last_host, node->host,
                            sizeof(node->last_host));
                node->last_port = node->port;
            }
            apr_thread_mutex_unlock(be->mutex);
            if (changed) {
                ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ap_server_conf,
                             RRL_LOGNO(00020) "%s: Sentinel %s:%d names %s:%d "
                             "master of %s", u->masked, a->host, a->port,
                             host, *port, u->master);
            }
            err = NULL;
        }
        if (reply) {
            freeReplyObject(reply);
        }
        redisFree(c);
        if (!err) {
            return NULL;
        }
    }
    return err;
}

/* Is the server on c the master?  NULL, or why not */
static const char *rrl_redis_role(apr_pool_t *p, redisContext *c)
{
    redisReply *reply = redisCommand(c, "ROLE");
    const char *err = NULL;

    if (!reply) {
        return apr_psprintf(p, "ROLE: %s", c->errstr);
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING
        || strcmp(reply->element[0]->str, "master") != 0) {
        err = "ROLE: the server the Sentinels named is not a master (a "
              "failover is under way)";
    }
    freeReplyObject(reply);
    return err;
}

/* The one connect function for commands: a node's address (a Sentinel's
 * master found first), then rrl_redis_conn_open; *gen is the master's
 * generation the connection belongs to */
redisContext *rrl_redis_conn_connect(rrl_backend_t *be, rrl_node_t *node,
                                     apr_pool_t *p, apr_uint32_t *gen,
                                     const char **errp)
{
    const rrl_redis_url_t *u = be->u;
    char host[sizeof(node->host)];
    int port = node->port;
    redisContext *c;

    *gen = 0;
    if (u->kind == RRL_REDIS_SENTINEL) {
        if ((*errp = rrl_sentinel_master(be, node, p, host, &port, gen))
            != NULL) {
            return NULL;
        }
    }
    else {
        apr_cpystrn(host, node->host, sizeof(host));
    }
    c = rrl_redis_conn_open(be, p, u->kind == RRL_REDIS_UNIX ? NULL : host,
                            port, u->db, errp);
    if (u->kind == RRL_REDIS_SENTINEL
        && (!c || (*errp = rrl_redis_role(p, c)) != NULL)) {
        if (c) {
            redisFree(c);
        }
        rrl_redis_conn_forget_master(be, node, *gen);
        return NULL;
    }
    if (!c) {
        return NULL;
    }
    /* from here on, replies are read into rrl_reply_t
     * (rrl_redis_pipe_roundtrip) */
    c->reader->fn = &rrl_resp_reply_fns;
    rrl_counters_count(RRL_CTR_CONNECTIONS);
    apr_atomic_inc32(&be->shared->connections);
    return c;
}

void rrl_redis_conn_close(const rrl_backend_t *be, rrl_conn_t *conn)
{
    if (conn->c) {
        redisFree(conn->c);
        conn->c = NULL;
        apr_atomic_dec32(&be->shared->connections);
    }
}

static apr_status_t rrl_conn_make(void **resource, void *params,
                                  apr_pool_t *pool)
{
    /* per connection, not per request; freed in rrl_conn_drop */
    rrl_conn_t *conn = calloc(1, sizeof(*conn));

    (void)params;
    (void)pool;
    if (!conn) {
        return APR_ENOMEM;
    }
    *resource = conn;
    return APR_SUCCESS;
}

static apr_status_t rrl_conn_drop(void *resource, void *params,
                                  apr_pool_t *pool)
{
    rrl_node_t *node = params;
    rrl_conn_t *conn = resource;

    (void)pool;
    rrl_redis_conn_close(node->be, conn);
    free(conn);
    return APR_SUCCESS;
}

/*
 * A Redis server as a child uses it: its connection pool, filled lazily
 * (idle connections beyond keep close after ttl; waiting for a free one
 * takes no longer than a command may), and its pipeline
 */
apr_status_t rrl_redis_conn_node_create(rrl_backend_t *be, apr_pool_t *p,
                                        const char *host, int port,
                                        rrl_node_t **nodep)
{
    rrl_node_t *node = apr_pcalloc(p, sizeof(*node));
    apr_status_t rv;

    node->be = be;
    apr_cpystrn(node->host, host, sizeof(node->host));
    node->port = port;
    node->pipe_tail = &node->pipe_head;
    if ((rv = pthread_mutex_init(&node->pipe_mx, NULL)) != 0) {
        return rv;
    }
    rv = apr_reslist_create(&node->pool, 0, be->pool_keep, be->pool_max,
                            be->pool_ttl, rrl_conn_make, rrl_conn_drop, node,
                            p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_reslist_timeout_set(node->pool, be->command_timeout);
    *nodep = node;
    return APR_SUCCESS;
}
