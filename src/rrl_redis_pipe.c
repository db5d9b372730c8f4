/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * A node's pipeline and its round trips.
 */

#include "apr_atomic.h"
#include "apr_strings.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <semaphore.h>
#include <string.h>
#include <sys/uio.h>

#include "rrl_private.h"
#include "rrl_redis_pipe.h"
#include "rrl_counters.h"
#include "rrl_script.h"
#include "rrl_util.h"

/*
 * Send the calls' commands in one write (RRL_SEND) and read their replies,
 * in order, into the calls' rep (RRL_RECEIVE), on conn.  The number of
 * calls that have their reply (n once sent, when only sending): when fewer
 * than n, *errp says what went wrong and *stale whether it looks like a
 * connection gone stale.
 */
int rrl_redis_pipe_roundtrip(apr_pool_t *p, const rrl_backend_t *be,
                             rrl_conn_t *conn, rrl_call_t *const *calls,
                             int n, int how, const char **errp, int *stale)
{
    struct iovec iov[RRL_PIPE_MAX + 1];
    redisReader *reader = conn->reader;
    char buf[RRL_READ_BUF];
    int i, k;

    *stale = 0;
    *errp = NULL;
    for (i = 0; i < n; i++) {
        rrl_resp_reset(calls[i]->rep);
    }
    if (how & RRL_SEND) {
        for (i = 0; i < n; i++) {
            iov[i].iov_base = (void *)calls[i]->cmd;
            iov[i].iov_len = calls[i]->len;
        }
        if (!rrl_sock_writev(p, &conn->sock, iov, n, be->command_timeout,
                             errp, stale)) {
            return 0;
        }
    }
    if (!(how & RRL_RECEIVE)) {
        return n;
    }
    /* a reply for each call, and before it +OK of ASKING where it began
     * with ASKING (a Cluster slot being migrated) */
    for (k = 0; k < n && !*errp; k++) {
        rrl_reply_t *rep = calls[k]->rep;
        int replies = calls[k]->asking ? 2 : 1;

        reader->privdata = rep;
        while (replies > 0 && !*errp) {
            void *reply = NULL;

            if (redisReaderGetReply(reader, &reply) != REDIS_OK) {
                *errp = apr_pstrdup(p, reader->errstr);
            }
            else if (!reply) {
                apr_size_t got = rrl_sock_read(p, &conn->sock, buf,
                                               sizeof(buf),
                                               be->command_timeout, errp,
                                               stale);

                if (got) {
                    redisReaderFeed(reader, buf, got);
                }
            }
            else if (reply != rep) {
                *errp = "a reply not read into its call";
            }
            else if (--replies == 1) {
                if (rep->type != REDIS_REPLY_STATUS || rep->bad) {
                    *errp = "ASKING: an unexpected reply";
                }
                rep->type = 0;
            }
        }
        if (replies > 0) {
            break;
        }
    }
    return k;
}

/* n commands sent in one write */
static void rrl_count_sent(int n)
{
    rrl_counters_add(RRL_CTR_REDIS_CALLS, (apr_uint64_t)n);
    rrl_counters_count(RRL_CTR_REDIS_WRITES);
}

/* Sentinel: a reply saying the server is not (or no longer) the master */
int rrl_redis_pipe_not_master(const rrl_reply_t *rep)
{
    return rep->type == REDIS_REPLY_ERROR
           && (strncmp(rep->str, "READONLY", 8) == 0
               || strncmp(rep->str, "LOADING", 7) == 0
               || strncmp(rep->str, "MASTERDOWN", 10) == 0);
}

/* Calls end without an answer: "what: err", or err alone */
static void rrl_calls_fail(rrl_call_t *const *calls, int n,
                           rrl_redis_rc_e rc, int with_what, const char *err)
{
    int i;

    for (i = 0; i < n; i++) {
        calls[i]->rc = rc;
        if (with_what) {
            apr_snprintf(calls[i]->err, sizeof(calls[i]->err), "%s: %s",
                         calls[i]->what, err);
        }
        else {
            apr_cpystrn(calls[i]->err, err, sizeof(calls[i]->err));
        }
    }
}

/* A pooled connection of node for the calls (a fresh one for a retry),
 * connected; NULL when none can be had: then the calls have failed */
static rrl_conn_t *rrl_batch_conn(request_rec *r, rrl_backend_t *be,
                                  rrl_node_t *node, int fresh,
                                  rrl_call_t *const *calls, int n)
{
    rrl_conn_t *conn;
    const char *err = NULL;

    if (apr_reslist_acquire(node->pool, (void **)&conn) != APR_SUCCESS) {
        rrl_calls_fail(calls, n, RRL_REDIS_DOWN, 0, "no connection free in "
                       "the pool (RateLimitRedisPool)");
        return NULL;
    }
    if (fresh || (rrl_redis_conn_connected(conn)
                  && conn->gen != apr_atomic_read32(&node->gen))) {
        rrl_redis_conn_close(be, conn);
    }
    if (!rrl_redis_conn_connected(conn)) {
        conn->served = 0;
        if ((err = rrl_redis_conn_connect(be, node, r->pool, conn)) != NULL) {
            apr_reslist_invalidate(node->pool, conn);
            rrl_calls_fail(calls, n, RRL_REDIS_DOWN, 0, err);
            return NULL;
        }
    }
    return conn;
}

/*
 * The n calls at all + 1 written (how & RRL_SEND) and read on conn, with
 * load (SCRIPT LOAD) in all[0] first when not NULL: the script and the
 * calls again in one write, as Redis runs one client's commands of one
 * read back to back, so that another SCRIPT FLUSH cannot come between
 * them.  How many calls have their reply; -1 when SCRIPT LOAD's own reply
 * was wrong: then the calls have failed and conn is dropped.
 */
static int rrl_batch_send(request_rec *r, rrl_backend_t *be,
                          rrl_node_t *node, rrl_conn_t *conn,
                          rrl_call_t **all, int n, rrl_call_t *load, int how,
                          const char **errp, int *stale)
{
    const rrl_reply_t *lr;
    int got;

    if (how & RRL_SEND) {
        rrl_count_sent(n + (load != NULL));
    }
    if (!load) {
        return rrl_redis_pipe_roundtrip(r->pool, be, conn, all + 1, n,
                                        how, errp, stale);
    }
    all[0] = load;
    got = rrl_redis_pipe_roundtrip(r->pool, be, conn, all, n + 1, how,
                                   errp, stale) - 1;
    lr = load->rep;
    if (got >= 0 && (lr->type != REDIS_REPLY_STRING || lr->bad
                     || strcmp(lr->str, rrl_script_sha) != 0)) {
        apr_reslist_invalidate(node->pool, conn);
        rrl_calls_fail(all + 1, n, RRL_REDIS_WRONG, 0,
                       apr_psprintf(r->pool, "SCRIPT LOAD: %s",
                                    lr->type == REDIS_REPLY_ERROR
                                    ? lr->str : "an unexpected reply"));
        return -1;
    }
    if (got < 0) {
        *errp = apr_psprintf(r->pool, "SCRIPT LOAD: %s", *errp);
        return 0;
    }
    return got;
}

/*
 * What the replies of the first got calls say.  Those answered are done;
 * those to go again stay in calls, in their order (*n of them): the ones
 * without a reply, NOSCRIPT (*nos counts them; not once the script was
 * loaded in this batch) and, under Sentinel, a master that is one no more
 * (*master_lost, its reply in *errp).  1 when a reply was malformed (the
 * connection must go).
 */
static int rrl_batch_sort(request_rec *r, rrl_backend_t *be,
                          rrl_call_t **calls, int *n, int got, int loaded,
                          int *nos, int *master_lost, const char **errp)
{
    int sentinel = be->u->kind == RRL_REDIS_SENTINEL;
    apr_time_t now = apr_time_now();
    int i, again = 0, drop = 0;

    *nos = *master_lost = 0;
    for (i = 0; i < *n; i++) {
        rrl_call_t *c = calls[i];

        if (i < got && !loaded && c->rep->type == REDIS_REPLY_ERROR
            && strncmp(c->rep->str, "NOSCRIPT", 8) == 0
            && strcmp(c->what, "EVALSHA") == 0) {
            rrl_counters_count(RRL_CTR_NOSCRIPT);
            (*nos)++;
        }
        else if (i < got && sentinel && rrl_redis_pipe_not_master(c->rep)) {
            if (!*master_lost) {
                *errp = apr_pstrdup(r->pool, c->rep->str);
            }
            *master_lost = 1;
        }
        else if (i < got) {
            c->rc = RRL_REDIS_OK;
            drop = drop || c->rep->bad;
            rrl_counters_latency(now - c->queued);
            continue;
        }
        calls[again++] = c;
    }
    *n = again;
    return drop;
}

/*
 * The calls of one round trip, on a pooled connection of node, by the
 * pool's rules: calls on a connection that went stale go again once on a
 * fresh one (so do calls a Sentinel master turned replica answered, after
 * asking the Sentinels again); EVALSHA that meets NOSCRIPT loads the
 * script and goes once more, on the same connection.  Every call ends
 * with its rc and its reply or its err.  sent: the calls were sent on
 * this pooled connection already.  The connection goes back to the pool
 * when all went well, or to *keep, for the next round trip, when keep is
 * not NULL.  batch is left as it is: the caller wakes every call in it.
 */
static void rrl_batch_go(request_rec *r, rrl_backend_t *be,
                         rrl_node_t *node, rrl_call_t *const *batch,
                         int n, rrl_conn_t *sent, rrl_conn_t **keep)
{
    /* all[0]: SCRIPT LOAD, when the script must go first; calls: those
     * still to be answered */
    rrl_call_t *all[RRL_PIPE_MAX + 1], **calls = all + 1, load = { 0 };
    rrl_reply_t load_rep = { 0 };     /* no parts: one reply */
    rrl_conn_t *conn = sent;
    int how = sent ? RRL_RECEIVE : RRL_SEND | RRL_RECEIVE;
    int fresh = 0;                /* retrying, on a fresh connection */
    int loaded = 0;               /* the script went in this batch */
    int with_load = 0;            /* it goes in the next write */

    memcpy(calls, batch, sizeof(*calls) * (apr_size_t)n);
    while (n > 0) {
        const char *err = NULL;
        int got, stale = 0, nos, master_lost, drop;

        if (!conn && !(conn = rrl_batch_conn(r, be, node, fresh, calls, n))) {
            return;
        }
        got = rrl_batch_send(r, be, node, conn, all, n,
                             with_load ? &load : NULL, how, &err, &stale);
        if (got < 0) {
            return;
        }
        loaded = loaded || with_load;
        with_load = 0;
        how = RRL_SEND | RRL_RECEIVE;
        drop = rrl_batch_sort(r, be, calls, &n, got, loaded, &nos,
                              &master_lost, &err);

        if (err || master_lost) {
            /* worth one retry on a fresh connection: a pooled one the
             * server had closed, or a master that is one no more */
            int retry = !fresh && (conn->served || master_lost)
                        && (stale || master_lost);

            if (be->u->kind == RRL_REDIS_SENTINEL) {
                rrl_redis_conn_forget_master(be, node, conn->gen);
            }
            apr_reslist_invalidate(node->pool, conn);
            conn = NULL;
            if (!retry) {
                rrl_calls_fail(calls, n, RRL_REDIS_DOWN, 1, err);
                return;
            }
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RRL_LOGNO(00012)
                          "%s: a pooled connection went stale (%s); "
                          "retrying on a fresh one", be->u->masked, err);
            fresh = 1;
        }
        else if (nos) {
            /* every call left met NOSCRIPT: load the script, send again */
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RRL_LOGNO(00011)
                          "%s: the script was missing (NOSCRIPT) and is "
                          "loaded again", be->u->masked);
            load.what = "SCRIPT LOAD";
            load.cmd = rrl_script_load;
            load.len = rrl_script_load_len;
            load.asking = 0;
            load.rep = &load_rep;
            with_load = 1;
        }
        else {
            conn->served = 1;
            if (drop) {
                apr_reslist_invalidate(node->pool, conn);
            }
            else if (keep) {
                *keep = conn;
            }
            else {
                apr_reslist_release(node->pool, conn);
            }
            return;
        }
    }
}

/* The calls taken off node's queue, their decisions joined (unless they
 * were sent joined already, on sent) and answered, each with its rc and
 * its reply or err (rrl_batch_go) */
static void rrl_redis_batch(request_rec *r, rrl_backend_t *be,
                            rrl_node_t *node, rrl_call_t *const *batch,
                            int n, rrl_conn_t *sent, rrl_conn_t **keep)
{
    if (!sent) {
        rrl_batch_join(&node->batch, batch, n);
    }
    rrl_batch_go(r, be, node, node->batch.calls, node->batch.n, sent, keep);
    rrl_batch_settle(&node->batch);
}

/* Up to the calls a round trip can carry (the node's batch.cap) off the
 * head of node's queue into calls (pipe_mx held); how many */
static int rrl_pipe_take(rrl_node_t *node, rrl_call_t **calls)
{
    int n;

    for (n = 0; node->pipe_head && n < node->batch.cap; n++) {
        calls[n] = node->pipe_head;
        node->pipe_head = calls[n]->next;
    }
    if (!node->pipe_head) {
        node->pipe_tail = &node->pipe_head;
    }
    return n;
}

#ifdef RRL_FAULTS
/* RRL_FAULTS=lose-wakeups drops every wake-up of the pipeline, so that
 * only the backstop of rrl_pipe_wait ends a wait */
static int rrl_post(sem_t *s)
{
    static int lose = -1;

    if (lose < 0) {
        lose = rrl_util_fault("lose-wakeups");
    }
    return lose ? 0 : sem_post(s);
}
#else
#define rrl_post sem_post
#endif

/* Take me out of node's queue, if it is there (pipe_mx held) */
static int rrl_pipe_unlink(rrl_node_t *node, rrl_call_t *me)
{
    rrl_call_t **q;

    for (q = &node->pipe_head; *q; q = &(*q)->next) {
        if (*q == me) {
            *q = me->next;
            if (!*q) {
                node->pipe_tail = q;
            }
            return 1;
        }
    }
    return 0;
}

/*
 * Wait until me is done or leads: RRL_CALL_DONE, or RRL_CALL_LEAD with
 * pipe_mx held.  The wake-up comes within a round trip of the one under
 * way, and every round trip is bounded (a connect, and each write and
 * read by the command timeout); the wait is bounded too, by twice a round
 * trip with its retry.  Should a wake-up ever be lost, the
 * backstop finds the call done or leading all the same (and says so when
 * the wake-up does not come a command timeout, or 1 s, later either), or still in
 * the queue, which it leaves as a timeout; a call in a round trip under
 * way waits for its end.  A wake-up that comes after the
 * backstop was no longer waited for reaches a later call of this thread,
 * which sees its state unchanged and waits on.
 */
/* Wait on s until deadline: 0 when posted, -1 when the time is up */
static int rrl_sem_wait_until(sem_t *s, apr_time_t deadline)
{
    struct timespec ts;

    ts.tv_sec = (time_t)apr_time_sec(deadline);
    ts.tv_nsec = (long)apr_time_usec(deadline) * 1000;
    while (sem_timedwait(s, &ts) != 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

static int rrl_pipe_wait(request_rec *r, rrl_backend_t *be,
                         rrl_node_t *node, rrl_call_t *me, sem_t *wake)
{
    /* twice what a round trip with one retry may take: generous, for it
     * is there for bugs, not for a slow Redis, which the round trip's own
     * timeouts answer */
    apr_interval_time_t bound = 2 * (be->connect_timeout
                                     + 2 * be->command_timeout);
    /* and for a wake-up on its way, a command timeout, at least 1 s */
    apr_interval_time_t grace = be->command_timeout > apr_time_from_sec(1)
                                ? be->command_timeout : apr_time_from_sec(1);
    apr_time_t deadline = me->queued + bound;

    for (;;) {
        int rv = rrl_sem_wait_until(wake, deadline), state;

        pthread_mutex_lock(&node->pipe_mx);
        if ((state = me->state) != RRL_CALL_QUEUED) {
            if (rv != 0) {
                /* done or leading, not woken: the wake-up may be on its
                 * way (a leader posts after it unlocks, and may be held up
                 * there, as under valgrind); lost if it does not come */
                pthread_mutex_unlock(&node->pipe_mx);
                if (rrl_sem_wait_until(wake, apr_time_now() + grace) != 0) {
                    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                                  RRL_LOGNO(00021) "%s: a request's wake-up "
                                  "in the pipeline did not come within %"
                                  APR_TIME_T_FMT " ms (a bug: please report "
                                  "it); it goes on", be->u->masked,
                                  apr_time_as_msec(bound + grace));
                }
                pthread_mutex_lock(&node->pipe_mx);
            }
            if (state == RRL_CALL_DONE) {
                pthread_mutex_unlock(&node->pipe_mx);
                return RRL_CALL_DONE;
            }
            return RRL_CALL_LEAD;
        }
        if (rv == 0) {
            /* a wake-up meant for an earlier call of this thread */
            pthread_mutex_unlock(&node->pipe_mx);
            continue;
        }
        if (rrl_pipe_unlink(node, me)) {
            pthread_mutex_unlock(&node->pipe_mx);
            me->rc = RRL_REDIS_DOWN;
            apr_snprintf(me->err, sizeof(me->err), "%s: timed out waiting "
                         "%" APR_TIME_T_FMT " ms for a round trip",
                         me->what, apr_time_as_msec(bound));
            return RRL_CALL_DONE;
        }
        pthread_mutex_unlock(&node->pipe_mx);
        deadline = apr_time_now() + bound;
    }
}

/*
 * A call to node through its pipeline, in this request's thread: when no
 * round trip to the node is under way, the call makes one at once (with
 * what queued meanwhile); otherwise it waits in the queue.  The thread
 * whose round trip ends sends what queued on the same connection and
 * hands the reading of the replies to the first of those calls, whose
 * thread is woken for it: by the time it runs they are mostly there.
 * Bounded: a round trip is, and when one finds Redis down, the calls
 * queued behind it end at once with the same error instead of trying in
 * turn.
 */
static rrl_redis_rc_e rrl_pipe_call(request_rec *r, rrl_backend_t *be,
                                    rrl_node_t *node, rrl_call_t *me)
{
    /* a thread waits on a semaphore of its own, posted once its call is
     * done or leads: no mutex to take again on waking, as a condition
     * variable would */
    static __thread sem_t wake;
    static __thread int wake_made;
    rrl_call_t *batch[RRL_PIPE_MAX], *q, *lead = NULL;
    sem_t *woken[RRL_PIPE_MAX * 2];
    rrl_conn_t *sent = NULL, *conn = NULL;
    const char *err;
    int i, n, nwoken = 0, down, stale;

    if (!wake_made) {
        if (sem_init(&wake, 0, 0) != 0) {
            apr_cpystrn(me->err, "cannot make a semaphore", sizeof(me->err));
            return RRL_REDIS_DOWN;
        }
        wake_made = 1;
    }
    me->next = NULL;
    me->wake = &wake;
    me->state = RRL_CALL_QUEUED;
    me->rc = RRL_REDIS_DOWN;
    me->err[0] = '\0';
    me->queued = apr_time_now();
    pthread_mutex_lock(&node->pipe_mx);
    *node->pipe_tail = me;
    node->pipe_tail = &me->next;
    if (node->pipe_busy) {
        pthread_mutex_unlock(&node->pipe_mx);
        if (rrl_pipe_wait(r, be, node, me, &wake) == RRL_CALL_DONE) {
            return me->rc;
        }
    }
    node->pipe_busy = 1;          /* this thread leads */
    if (node->nahead) {
        /* handed over: calls sent on ahead_conn (or to send, if it broke),
         * me first */
        n = node->nahead;
        memcpy(batch, node->ahead, sizeof(*batch) * (apr_size_t)n);
        sent = node->ahead_conn;
        node->nahead = 0;
        node->ahead_conn = NULL;
    }
    else {
        n = rrl_pipe_take(node, batch);   /* me first */
    }
    pthread_mutex_unlock(&node->pipe_mx);

    rrl_redis_batch(r, be, node, batch, n, sent, &conn);

    pthread_mutex_lock(&node->pipe_mx);
    for (down = 1, i = 0; i < n; i++) {
        down = down && batch[i]->rc == RRL_REDIS_DOWN;
        if (batch[i] != me) {
            batch[i]->state = RRL_CALL_DONE;
            woken[nwoken++] = batch[i]->wake;
        }
    }
    while (down && (q = node->pipe_head) != NULL
           && nwoken < RRL_PIPE_MAX * 2) {
        node->pipe_head = q->next;
        q->rc = RRL_REDIS_DOWN;
        apr_cpystrn(q->err, me->err, sizeof(q->err));
        q->state = RRL_CALL_DONE;
        woken[nwoken++] = q->wake;
    }
    if (node->pipe_head && conn) {
        /* what queued goes next, sent by this thread below */
        node->nahead = rrl_pipe_take(node, node->ahead);
        node->ahead_conn = conn;
        lead = node->ahead[0];
    }
    else if (node->pipe_head) {
        lead = node->pipe_head;
        lead->state = RRL_CALL_LEAD;
    }
    else {
        node->pipe_tail = &node->pipe_head;   /* drained, if down */
        node->pipe_busy = 0;
    }
    pthread_mutex_unlock(&node->pipe_mx);

    /* after the unlock: a thread woken under it would only wait for it */
    for (i = 0; i < nwoken; i++) {
        rrl_post(woken[i]);
    }
    if (conn && lead) {
        /* the pipeline is this thread's until lead leads: it says so
         * only once what it is to read has been sent, joined */
        rrl_batch_join(&node->batch, node->ahead, node->nahead);
        rrl_count_sent(node->batch.n);
        if (rrl_redis_pipe_roundtrip(r->pool, be, conn, node->batch.calls,
                                     node->batch.n, RRL_SEND, &err, &stale)
            != node->batch.n) {
            apr_reslist_invalidate(node->pool, conn);
            node->ahead_conn = NULL;      /* lead starts afresh */
        }
        pthread_mutex_lock(&node->pipe_mx);
        lead->state = RRL_CALL_LEAD;
        pthread_mutex_unlock(&node->pipe_mx);
    }
    else if (conn) {
        apr_reslist_release(node->pool, conn);
    }
    if (lead) {
        rrl_post(lead->wake);
    }
    return me->rc;
}

/* One command to node through its pipeline (a decision: d says where its
 * parts are): its reply in rep, or *errp */
static rrl_redis_rc_e rrl_pipe_command(request_rec *r, rrl_backend_t *be,
                                       rrl_node_t *node, const char *what,
                                       const char *cmd, apr_size_t len,
                                       int asking,
                                       const rrl_script_parts_t *d,
                                       rrl_reply_t *rep, const char **errp)
{
    rrl_call_t call;
    rrl_redis_rc_e rc;

    call.what = what;
    call.cmd = cmd;
    call.len = len;
    call.asking = asking;
    call.rep = rep;
    call.decision = d;
    call.members = NULL;
    call.nmembers = 0;
    if ((rc = rrl_pipe_call(r, be, node, &call)) != RRL_REDIS_OK) {
        *errp = apr_pstrdup(r->pool, call.err);
    }
    return rc;
}

rrl_redis_rc_e rrl_redis_pipe_call(request_rec *r, rrl_backend_t *be,
                                   rrl_node_t *node, const char *what,
                                   const char *cmd, apr_size_t len,
                                   int asking, rrl_reply_t *rep,
                                   const char **errp)
{
    rep->parts = NULL;
    return rrl_pipe_command(r, be, node, what, cmd, len, asking, NULL, rep,
                            errp);
}

/* One EVALSHA on a node decides every item: check all, then spend all,
 * maybe in a batch with other requests' (its entry of the reply is its
 * own).  redirect (Cluster only): a MOVED or ASK reply is copied there */
rrl_redis_rc_e rrl_redis_pipe_eval(request_rec *r, rrl_backend_t *be,
                                   rrl_node_t *node, int asking,
                                   rrl_item_t *items, int n,
                                   apr_int64_t *now, char *redirect,
                                   const char **errp)
{
    static const char asking_resp[] = "*1\r\n$6\r\nASKING\r\n";
    apr_int64_t ints[2 + 8 * 8];       /* 4 per item, 4 per plan read */
    rrl_reply_t rep;
    rrl_redis_rc_e rc;
    rrl_script_parts_t d;
    const char *cmd = rrl_script_evalsha(r->pool, items, n, &d);
    apr_size_t len = d.len;

    d.slot = redirect ? rrl_key_slot(items[0].key, items[0].keylen) : 0;
    if (asking) {
        char *both = apr_palloc(r->pool, sizeof(asking_resp) - 1 + len);

        memcpy(both, asking_resp, sizeof(asking_resp) - 1);
        memcpy(both + sizeof(asking_resp) - 1, cmd, len);
        cmd = both;
        len += sizeof(asking_resp) - 1;
        d.keys_at += sizeof(asking_resp) - 1;
        d.args_at += sizeof(asking_resp) - 1;
    }
    rep.parts = NULL;
    rep.nints = 2 + 8 * (apr_size_t)n;
    rep.ints = rep.nints <= sizeof(ints) / sizeof(ints[0])
               ? ints : apr_palloc(r->pool, sizeof(*ints) * rep.nints);
    if ((rc = rrl_pipe_command(r, be, node, "EVALSHA", cmd, len, asking, &d,
                               &rep, errp)) != RRL_REDIS_OK) {
        return rc;
    }
    if (redirect && rep.type == REDIS_REPLY_ERROR
        && (strncmp(rep.str, "MOVED ", 6) == 0
            || strncmp(rep.str, "ASK ", 4) == 0)) {
        memcpy(redirect, rep.str, RRL_REPLY_STR);
        return RRL_REDIS_OK;
    }
    *errp = rrl_script_reply(r->pool, &rep, items, n, now);
    rrl_counters_add(RRL_CTR_REDIS_DECISIONS, *errp == NULL);
    return *errp ? RRL_REDIS_WRONG : RRL_REDIS_OK;
}
