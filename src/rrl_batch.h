/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * A call on its way to a node, and the decisions of a round trip joined
 * into one: the EVALSHAs queued for one node (under Cluster, for one
 * slot) leave as ONE EVALSHA of the script's batch form, each request
 * still all-or-nothing on its own items, in arrival order, with an entry
 * of the reply each.  Redis runs the script once and TIME once for them
 * all instead of once each.  A call alone goes as it is (a batch of one).
 */

#ifndef RRL_BATCH_H
#define RRL_BATCH_H

#include <semaphore.h>

#include "rrl.h"
#include "rrl_counters.h"
#include "rrl_resp.h"
#include "rrl_script.h"

/* How a call to Redis ended */
typedef enum {
    RRL_REDIS_OK = 0,
    RRL_REDIS_DOWN,      /* no answer: refused, timed out, closed, no auth */
    RRL_REDIS_WRONG      /* Redis answered, but not what the script gives */
} rrl_redis_rc_e;

#define RRL_PIPE_MAX 64           /* calls in one round trip */

#define RRL_BATCH_MAX 64          /* requests in one EVALSHA */

#define RRL_BATCH_BYTES 16384     /* and its size at most */

#define RRL_BATCH_ROOM 32768      /* a round trip's joined EVALSHAs */

/*
 * One command on its way through a node's pipeline.  The requests of a
 * child that need a node while a round trip to it is under way queue up,
 * and the next round trip carries them all: one write and one read for
 * the child, one read of the socket and one write for Redis, instead of
 * one each per request (envoyproxy/ratelimit's pipelining, without its
 * timer: a batch leaves the moment the connection is free, so a request
 * alone waits for nothing).  A call lives on its request's stack; the
 * call that carries joined decisions, in its node's rrl_batch_set_t.
 */
enum { RRL_CALL_QUEUED, RRL_CALL_DONE, RRL_CALL_LEAD };

typedef struct rrl_call rrl_call_t;

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
    /* a decision: its KEYS and ARGV in cmd, for joining it (NULL: other
     * calls, which go as they are) */
    const rrl_script_parts_t *decision;
    /* a joined call: the decisions it carries */
    rrl_call_t **members;
    int nmembers;
};

/* The calls of the round trip under way on a node: the decisions joined,
 * the others as they are.  One per node, made with it: a node has one
 * round trip at a time (its pipe_busy), joined by the thread that sends
 * it and read by the one that reads it, retries included.  Room for cap
 * calls a round trip (the backend's batch_cap) */
typedef struct {
    int cap;
    rrl_call_t **calls;           /* as they go */
    int n;
    rrl_call_t *joined;           /* a batch's call, */
    rrl_reply_t *reps;            /* its reply, */
    rrl_call_t **members;         /* its requests', in turn, */
    rrl_reply_t **parts;          /* and their replies */
    char *buf;                    /* the batches' commands, RRL_BATCH_ROOM;
                                   * NULL when cap is 1 */
} rrl_batch_set_t;

apr_status_t rrl_batch_init(rrl_batch_set_t *bs, apr_pool_t *p, int cap);
void rrl_batch_join(rrl_batch_set_t *bs, rrl_call_t *const *calls, int n);
void rrl_batch_settle(rrl_batch_set_t *bs);

#endif /* RRL_BATCH_H */
