/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * A node's pipeline: the calls of a child's requests queue while a round
 * trip to the node is under way and leave together in the next; one round
 * trip on a pooled connection, with its retries (stale connection, a
 * Sentinel master turned replica, NOSCRIPT); the EVALSHA that decides.
 */

#ifndef RRL_REDIS_PIPE_H
#define RRL_REDIS_PIPE_H

#include <semaphore.h>

#include "rrl.h"
#include "rrl_redis_conn.h"
#include "rrl_resp.h"

/* How a call to Redis ended */
typedef enum {
    RRL_REDIS_OK = 0,
    RRL_REDIS_DOWN,      /* no answer: refused, timed out, closed, no auth */
    RRL_REDIS_WRONG      /* Redis answered, but not what the script gives */
} rrl_redis_rc_e;

/*
 * One command on its way through a node's pipeline.  The requests of a
 * child that need a node while a round trip to it is under way queue up,
 * and the next round trip carries them all: one write and one read for
 * the child, one read of the socket and one write for Redis, instead of
 * one each per request (envoyproxy/ratelimit's pipelining, without its
 * timer: a batch leaves the moment the connection is free, so a request
 * alone waits for nothing).  A call lives on its request's stack.
 */
enum { RRL_CALL_QUEUED, RRL_CALL_DONE, RRL_CALL_LEAD };

struct rrl_call {
    rrl_call_t *next;             /* in the node's queue */
    const char *what;             /* "EVALSHA", "PING": for messages */
    const char *cmd;              /* RESP; ASKING first when asking */
    apr_size_t len;
    int asking;
    rrl_reply_t *rep;             /* where its reply goes */
    apr_time_t queued;
    int state;                    /* RRL_CALL_*, set under the node's
                                   * pipe_mx, then its thread's wake posted */
    sem_t *wake;                  /* its thread's */
    rrl_redis_rc_e rc;
    char err[RRL_ERR_LEN];        /* unless rc is RRL_REDIS_OK */
};

#define RRL_SEND 1

#define RRL_RECEIVE 2

int rrl_redis_pipe_roundtrip(apr_pool_t *p, const rrl_backend_t *be,
                             rrl_conn_t *conn, rrl_call_t *const *calls, int n,
                             int how, const char **errp, int *stale);
int rrl_redis_pipe_not_master(const rrl_reply_t *rep);
rrl_redis_rc_e rrl_redis_pipe_call(request_rec *r, rrl_backend_t *be,
                                   rrl_node_t *node, const char *what,
                                   const char *cmd, apr_size_t len, int asking,
                                   rrl_reply_t *rep, const char **errp);
rrl_redis_rc_e rrl_redis_pipe_eval(request_rec *r, rrl_backend_t *be,
                                   rrl_node_t *node, int asking,
                                   rrl_item_t *items, int n, apr_int64_t *now,
                                   char *redirect, const char **errp);

#endif /* RRL_REDIS_PIPE_H */
