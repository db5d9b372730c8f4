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
#include <sys/uio.h>

#include "http_main.h"

#include "rrl_private.h"
#include "rrl_redis_conn.h"
#include "rrl_resp.h"
#include "rrl_util.h"

/*
 * One command on s and its whole reply, built by hiredis' own reader (a
 * redisReply the caller frees with freeReplyObject): for what is asked
 * once a connection (AUTH, SELECT, ROLE, SENTINEL, CLUSTER SLOTS), never
 * on a pooled connection's pipeline.  NULL and *errp on failure.
 */
redisReply *rrl_redis_conn_command(rrl_backend_t *be, apr_pool_t *p,
                                   rrl_sock_t *s, int argc,
                                   const char **argv, const char **errp)
{
    redisReader *reader;
    struct iovec iov;
    void *reply = NULL;
    apr_size_t len;
    char buf[RRL_READ_BUF];
    int stale;

    iov.iov_base = (void *)rrl_resp_format(p, argc, argv, NULL, &len);
    iov.iov_len = len;
    if (!rrl_sock_writev(p, s, &iov, 1, be->command_timeout, errp, &stale)) {
        *errp = apr_psprintf(p, "%s: %s", argv[0], *errp);
        return NULL;
    }
    if (!(reader = redisReaderCreate())) {
        *errp = "out of memory";
        return NULL;
    }
    while (redisReaderGetReply(reader, &reply) == REDIS_OK && !reply) {
        apr_size_t n = rrl_sock_read(p, s, buf, sizeof(buf),
                                     be->command_timeout, errp, &stale);

        if (!n) {
            break;
        }
        redisReaderFeed(reader, buf, n);
    }
    if (!reply) {
        *errp = apr_psprintf(p, "%s: %s", argv[0],
                             reader->err ? reader->errstr : *errp);
    }
    redisReaderFree(reader);
    return reply;
}

/* AUTH or SELECT on a new connection: NULL, or what went wrong */
static const char *rrl_redis_setup(rrl_backend_t *be, apr_pool_t *p,
                                   rrl_sock_t *s, int argc,
                                   const char **argv)
{
    const char *err = NULL;
    redisReply *reply = rrl_redis_conn_command(be, p, s, argc, argv, &err);

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        err = apr_psprintf(p, "%s: %s", argv[0], reply->str);
    }
    if (reply) {
        freeReplyObject(reply);
    }
    return err;
}

/*
 * Connect s to one server within the connect timeout, TLS included when
 * the URL says so (ts: the node's session slot, or NULL), then AUTH, and
 * SELECT where asked.  host NULL: the URL's unix socket.  NULL, or what
 * went wrong.
 */
const char *rrl_redis_conn_open(rrl_backend_t *be, apr_pool_t *p,
                                const char *host, int port, int db,
                                rrl_tls_session_t *ts, rrl_sock_t *s)
{
    const rrl_redis_url_t *u = be->u;
    rrl_sock_to_t to;
    const char *err;
    int resumed;

    to.host = host;
    to.port = port;
    to.path = u->path;
    to.timeout = be->connect_timeout;
    to.tls = u->tls ? be->tls : NULL;
    to.tls_name = u->sni ? u->sni : host;
    to.session = ts;
    if ((err = rrl_sock_connect(p, s, &to, &resumed)) != NULL) {
        return apr_psprintf(p, "connect to %s:%d: %s", host ? host : u->path,
                            port, err);
    }
    if (resumed) {
        rrl_counters_count(RRL_CTR_TLS_RESUMED);
    }
    if (u->tls && !u->password) {
        /* TLS 1.3 servers refuse a client certificate after the
         * handshake: a round trip says so now (AUTH is one already) */
        const char *ping[1] = { "PING" };

        if ((err = rrl_redis_setup(be, p, s, 1, ping)) != NULL) {
            rrl_sock_close(s);
            return apr_psprintf(p, "connect to %s:%d: TLS: %s",
                                host ? host : u->path, port, err);
        }
    }
    if (u->password) {
        const char *auth[3] = { "AUTH", u->user, u->password };

        if (!u->user) {
            auth[1] = u->password;
        }
        err = rrl_redis_setup(be, p, s, u->user ? 3 : 2, auth);
    }
    if (!err && db) {
        const char *sel[2] = { "SELECT", apr_itoa(p, db) };

        err = rrl_redis_setup(be, p, s, 2, sel);
    }
    if (err) {
        rrl_sock_close(s);
    }
    return err;
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
        redisReply *reply;
        rrl_sock_t s;

        if ((err = rrl_redis_conn_open(be, p, a->host, a->port, 0, NULL,
                                       &s)) != NULL) {
            continue;
        }
        if (!(reply = rrl_redis_conn_command(be, p, &s, 3, argv, &err))) {
            err = apr_psprintf(p, "Sentinel %s:%d: %s", a->host, a->port,
                               err);
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
        rrl_sock_close(&s);
        if (!err) {
            return NULL;
        }
    }
    return err;
}

/* Is the server on s the master?  NULL, or why not */
static const char *rrl_redis_role(rrl_backend_t *be, apr_pool_t *p,
                                  rrl_sock_t *s)
{
    const char *argv[1] = { "ROLE" }, *err = NULL;
    redisReply *reply = rrl_redis_conn_command(be, p, s, 1, argv, &err);

    if (!reply) {
        return err;
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

/* The one connect function for pooled connections: a node's address (a
 * Sentinel's master found first, and checked), then rrl_redis_conn_open,
 * and the connection's reader of replies into rrl_reply_t; conn->gen is
 * the master's generation the connection belongs to.  NULL, or what went
 * wrong */
const char *rrl_redis_conn_connect(rrl_backend_t *be, rrl_node_t *node,
                                   apr_pool_t *p, rrl_conn_t *conn)
{
    const rrl_redis_url_t *u = be->u;
    char host[sizeof(node->host)];
    int port = node->port;
    const char *err;

    conn->gen = 0;
    if (u->kind == RRL_REDIS_SENTINEL) {
        if ((err = rrl_sentinel_master(be, node, p, host, &port, &conn->gen))
            != NULL) {
            return err;
        }
    }
    else {
        apr_cpystrn(host, node->host, sizeof(host));
    }
    err = rrl_redis_conn_open(be, p, u->kind == RRL_REDIS_UNIX ? NULL : host,
                              port, u->db, u->tls ? &node->tls : NULL,
                              &conn->sock);
    if (u->kind == RRL_REDIS_SENTINEL
        && (err || (err = rrl_redis_role(be, p, &conn->sock)) != NULL)) {
        rrl_sock_close(&conn->sock);
        rrl_redis_conn_forget_master(be, node, conn->gen);
        return err;
    }
    if (err) {
        return err;
    }
    if (!(conn->reader = redisReaderCreate())) {
        rrl_sock_close(&conn->sock);
        return "out of memory";
    }
    conn->reader->fn = &rrl_resp_reply_fns;
    rrl_counters_count(RRL_CTR_CONNECTIONS);
    apr_atomic_inc32(&be->shared->connections);
    return NULL;
}

int rrl_redis_conn_connected(const rrl_conn_t *conn)
{
    return conn->sock.fd >= 0;
}

void rrl_redis_conn_close(const rrl_backend_t *be, rrl_conn_t *conn)
{
    if (conn->sock.fd >= 0) {
        rrl_sock_close(&conn->sock);
        apr_atomic_dec32(&be->shared->connections);
    }
    if (conn->reader) {
        redisReaderFree(conn->reader);
        conn->reader = NULL;
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
    conn->sock.fd = -1;
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
    if ((rv = rrl_batch_init(&node->batch, p, be->batch_cap))
        != APR_SUCCESS) {
        return rv;
    }
    if (be->u->tls && (rv = rrl_tls_session_init(&node->tls, p))
                      != APR_SUCCESS) {
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
