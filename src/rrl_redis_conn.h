/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The bottom of the Redis stack: a backend (one Redis as this server uses
 * it), its nodes (the servers it sends commands to, each with a pool of
 * connections per child) and the one connect function: TCP or unix,
 * TLS, AUTH, SELECT, and for Sentinel the master the Sentinels name; a
 * command and its whole reply, for what is asked once a connection
 * (hiredis' reader builds the reply; the I/O is rrl_sock's).
 */

#ifndef RRL_REDIS_CONN_H
#define RRL_REDIS_CONN_H

#include "apr_reslist.h"
#include "apr_thread_mutex.h"

#include <pthread.h>

#include <hiredis/hiredis.h>

#include "rrl.h"
#include "rrl_batch.h"
#include "rrl_counters.h"
#include "rrl_key.h"
#include "rrl_sock.h"
#include "rrl_url.h"

#define RRL_MAX_NODES 64          /* of one Redis Cluster */

/* One Redis server that a backend sends commands to: the URL's own, the
 * master that the Sentinels name, or one node of a Cluster; per child,
 * with its pool of connections */
typedef struct rrl_node {
    struct rrl_backend *be;
    char host[256];               /* sentinel: "" until the master is known */
    int port;
    char last_host[256];          /* sentinel: the master last logged */
    int last_port;
    volatile apr_uint32_t gen;    /* sentinel: bumped when it is forgotten */
    rrl_tls_session_t tls;        /* TLS: the session to resume */
    apr_reslist_t *pool;
    pthread_mutex_t pipe_mx;      /* guards the pipeline: */
    int pipe_busy;                /* a round trip is under way */
    rrl_call_t *pipe_head, **pipe_tail;   /* the calls queued for the next */
    rrl_call_t *ahead[RRL_PIPE_MAX];   /* handed over: sent, to be read */
    int nahead;
    struct rrl_conn *ahead_conn;  /* on this (NULL: to be sent afresh) */
    rrl_batch_set_t batch;        /* the round trip's calls, joined */
} rrl_node_t;

/* One Redis as this server uses it: a distinct URL with its timeouts and
 * pool settings; its connection pools are per child */
typedef struct rrl_backend {
    const rrl_redis_url_t *u;
    apr_interval_time_t connect_timeout, command_timeout;
    int pool_max, pool_keep;
    apr_interval_time_t pool_ttl;
    int batch_cap;                /* calls in a round trip, at most */
    /* per child, made in child_init */
    rrl_node_t *node;             /* single Redis or Sentinel: the one */
    apr_thread_mutex_t *mutex;    /* guards what follows */
    apr_pool_t *cpool;            /* cluster: nodes learnt later */
    rrl_node_t *nodes[RRL_MAX_NODES];   /* cluster: every node known */
    int nnodes;
    apr_uint16_t *slots;          /* cluster: slot -> node index + 1 */
    apr_time_t log_second;        /* errors: one line a second per child */
    int log_suppressed;
    /* circuit breaker of this child: after failures, Redis is left alone
     * until open_until, then one request probes it */
    volatile apr_uint32_t failures;   /* consecutive; 0: closed */
    apr_time_t open_until;
    int probing;
    apr_time_t probe_deadline;
    /* no probe is due before this (us; the later of open_until and a
     * running probe's deadline): while open, requests read it without
     * taking the mutex */
    volatile apr_uint64_t quiet_until;
    rrl_shared_backend_t *shared; /* set in post_config */
    rrl_tls_t *tls;               /* rediss: its TLS, set in post_config */
} rrl_backend_t;

/* A pooled connection: made empty, connected on first use (so no network
 * I/O happens under the pool's lock), dropped after any error */
typedef struct rrl_conn {
    rrl_sock_t sock;       /* fd -1: not connected */
    redisReader *reader;   /* its replies, read into rrl_reply_t */
    int served;            /* answered before: a failure now may be
                            * staleness */
    apr_uint32_t gen;      /* sentinel: of the master it was made for */
} rrl_conn_t;

const char *rrl_redis_conn_open(rrl_backend_t *be, apr_pool_t *p,
                                const char *host, int port, int db,
                                rrl_tls_session_t *ts, rrl_sock_t *s);
redisReply *rrl_redis_conn_command(rrl_backend_t *be, apr_pool_t *p,
                                   rrl_sock_t *s, int argc,
                                   const char **argv, const char **errp);
void rrl_redis_conn_forget_master(rrl_backend_t *be, rrl_node_t *node,
                                  apr_uint32_t gen);
const char *rrl_redis_conn_connect(rrl_backend_t *be, rrl_node_t *node,
                                   apr_pool_t *p, rrl_conn_t *conn);
int rrl_redis_conn_connected(const rrl_conn_t *conn);
void rrl_redis_conn_close(const rrl_backend_t *be, rrl_conn_t *conn);
apr_status_t rrl_redis_conn_node_create(rrl_backend_t *be, apr_pool_t *p,
                                        const char *host, int port,
                                        rrl_node_t **nodep);

#endif /* RRL_REDIS_CONN_H */
