/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * Redis Cluster: hash slots and the nodes that own them.
 */

#include "apr_strings.h"

#include <string.h>

#include "rrl_private.h"
#include "rrl_redis_cluster.h"
#include "rrl_util.h"

/* The index of node HOST:PORT, added when new (be->mutex held); -1 if the
 * table is full or its pool cannot be made */
static int rrl_cluster_node(rrl_backend_t *be, const char *host, int port)
{
    rrl_node_t *node;
    int i;

    for (i = 0; i < be->nnodes; i++) {
        if (be->nodes[i]->port == port
            && strcmp(be->nodes[i]->host, host) == 0) {
            return i;
        }
    }
    if (be->nnodes == RRL_MAX_NODES || strlen(host) >= sizeof(node->host)) {
        return -1;
    }
    if (rrl_redis_conn_node_create(be, be->cpool, host, port, &node)
        != APR_SUCCESS) {
        return -1;
    }
    be->nodes[be->nnodes] = node;
    return be->nnodes++;
}

/* The slot map of one CLUSTER SLOTS reply (be->mutex held); asked: the
 * node that answered, for entries that leave the host out */
int rrl_redis_cluster_learn(rrl_backend_t *be, const redisReply *reply,
                            const char *asked)
{
    size_t i;
    int learnt = 0;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return 0;
    }
    for (i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i], *m;
        long long slot;
        int idx;

        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3
            || e->element[0]->type != REDIS_REPLY_INTEGER
            || e->element[1]->type != REDIS_REPLY_INTEGER
            || (m = e->element[2])->type != REDIS_REPLY_ARRAY
            || m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING
            || m->element[1]->type != REDIS_REPLY_INTEGER
            || e->element[0]->integer < 0
            || e->element[1]->integer >= RRL_SLOTS) {
            continue;
        }
        idx = rrl_cluster_node(be, *m->element[0]->str ? m->element[0]->str
                                                       : asked,
                               (int)m->element[1]->integer);
        if (idx < 0) {
            continue;
        }
        for (slot = e->element[0]->integer; slot <= e->element[1]->integer;
             slot++) {
            be->slots[slot] = (apr_uint16_t)(idx + 1);
        }
        learnt = 1;
    }
    return learnt;
}

/* Learn the slot map from the first node that answers CLUSTER SLOTS: the
 * nodes known, then the URL's.  NULL, or what went wrong */
const char *rrl_redis_cluster_refresh(rrl_backend_t *be, apr_pool_t *p)
{
    const rrl_redis_url_t *u = be->u;
    apr_array_header_t *ask = apr_array_make(p, 8, sizeof(rrl_addr_t));
    const char *err = "no node of the Cluster answered";
    int i;

    apr_thread_mutex_lock(be->mutex);
    for (i = 0; i < be->nnodes; i++) {
        rrl_addr_t *a = apr_array_push(ask);

        a->host = apr_pstrdup(p, be->nodes[i]->host);
        a->port = be->nodes[i]->port;
    }
    apr_thread_mutex_unlock(be->mutex);
    apr_array_cat(ask, u->addrs);
    for (i = 0; i < ask->nelts; i++) {
        const rrl_addr_t *a = &APR_ARRAY_IDX(ask, i, rrl_addr_t);
        const char *argv[2] = { "CLUSTER", "SLOTS" };
        redisReply *reply;
        int learnt = 0;
        rrl_sock_t s;

        if ((err = rrl_redis_conn_open(be, p, a->host, a->port, 0, NULL,
                                       &s)) != NULL) {
            continue;
        }
        if ((reply = rrl_redis_conn_command(be, p, &s, 2, argv, &err))
            != NULL) {
            apr_thread_mutex_lock(be->mutex);
            learnt = rrl_redis_cluster_learn(be, reply, a->host);
            apr_thread_mutex_unlock(be->mutex);
            if (!learnt) {
                err = apr_psprintf(p, "CLUSTER SLOTS on %s:%d: %s", a->host,
                                   a->port, reply->type == REDIS_REPLY_ERROR
                                   ? reply->str : "no slots");
            }
            freeReplyObject(reply);
        }
        else {
            err = apr_psprintf(p, "CLUSTER SLOTS on %s:%d: %s", a->host,
                               a->port, err);
        }
        rrl_sock_close(&s);
        if (learnt) {
            return NULL;
        }
    }
    return err;
}

/* The node that owns slot, as far as this child knows; NULL: unknown */
rrl_node_t *rrl_redis_cluster_route(rrl_backend_t *be, unsigned slot)
{
    rrl_node_t *node = NULL;

    apr_thread_mutex_lock(be->mutex);
    if (be->slots[slot]) {
        node = be->nodes[be->slots[slot] - 1];
    }
    apr_thread_mutex_unlock(be->mutex);
    return node;
}

/*
 * One EVALSHA for items that share a slot, on the node that owns it:
 * MOVED updates the slot map and goes there; ASK goes there once, with
 * ASKING (the slot is being migrated).
 */
static rrl_redis_rc_e rrl_cluster_eval(request_rec *r, rrl_backend_t *be,
                                       unsigned slot, rrl_item_t *items,
                                       int n, apr_int64_t *now,
                                       const char **errp)
{
    rrl_node_t *node = rrl_redis_cluster_route(be, slot);
    char redirect[RRL_REPLY_STR];
    int hops, asking = 0;

    for (hops = 0; hops < 5; hops++) {
        rrl_redis_rc_e rc;
        char *target, *colon;
        apr_int64_t port;
        int idx = -1, moved;

        if (!node) {
            if ((*errp = rrl_redis_cluster_refresh(be, r->pool)) != NULL) {
                return RRL_REDIS_DOWN;
            }
            if (!(node = rrl_redis_cluster_route(be, slot))) {
                *errp = apr_psprintf(r->pool, "no node of the Cluster "
                                     "serves slot %u", slot);
                return RRL_REDIS_DOWN;
            }
        }
        redirect[0] = '\0';
        rc = rrl_redis_pipe_eval(r, be, node, asking, items, n, now, redirect,
                                 errp);
        if (rc != RRL_REDIS_OK || !redirect[0]) {
            return rc;
        }
        /* "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381" */
        moved = redirect[0] == 'M';
        target = strrchr(redirect, ' ');
        colon = target ? strrchr(target, ':') : NULL;
        if (colon && rrl_util_parse_int(colon + 1, 1, 65535, &port)) {
            *colon = '\0';
            apr_thread_mutex_lock(be->mutex);
            idx = rrl_cluster_node(be, target + 1, (int)port);
            if (idx >= 0) {
                node = be->nodes[idx];
                if (moved) {
                    be->slots[slot] = (apr_uint16_t)(idx + 1);
                }
            }
            apr_thread_mutex_unlock(be->mutex);
        }
        if (idx < 0) {
            *errp = apr_psprintf(r->pool, "EVALSHA: cannot follow '%s'",
                                 redirect);
            return RRL_REDIS_WRONG;
        }
        asking = !moved;
        ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r, "%s: slot %u %s to "
                      "%s:%d", be->u->masked, slot,
                      moved ? "moved" : "being migrated", node->host,
                      node->port);
    }
    *errp = "EVALSHA: redirected more than 5 times in the Cluster";
    return RRL_REDIS_DOWN;
}

/*
 * Decide the items in a Cluster: one EVALSHA per slot their keys fall
 * into, in order, stopping at the first that denies (later slots are not
 * asked, and spend nothing; earlier ones have spent).
 */
rrl_redis_rc_e rrl_redis_cluster_decide(request_rec *r, rrl_backend_t *be,
                                        rrl_item_t *items, int n,
                                        apr_int64_t *now, const char **errp)
{
    unsigned *slot;
    char *done;
    rrl_item_t *group;
    int i, j, k, denied = 0, first = 1;

    slot = apr_palloc(r->pool, sizeof(*slot) * n);
    done = apr_pcalloc(r->pool, n);
    group = apr_palloc(r->pool, sizeof(*group) * n);
    for (i = 0; i < n; i++) {
        slot[i] = rrl_key_slot(items[i].key, items[i].keylen);
    }
    for (i = 0; i < n; i++) {
        apr_int64_t t;
        rrl_redis_rc_e rc;

        if (done[i]) {
            continue;
        }
        if (denied) {
            /* not asked: the request is denied already */
            items[i].allowed = 1;
            items[i].remaining = items[i].p->count;
            items[i].reset = items[i].retry = 0;
            continue;
        }
        for (j = i, k = 0; j < n; j++) {
            if (!done[j] && slot[j] == slot[i]) {
                group[k++] = items[j];
            }
        }
        if ((rc = rrl_cluster_eval(r, be, slot[i], group, k, &t, errp))
            != RRL_REDIS_OK) {
            return rc;
        }
        if (first) {
            *now = t;
            first = 0;
        }
        for (j = i, k = 0; j < n; j++) {
            if (!done[j] && slot[j] == slot[i]) {
                items[j] = group[k++];
                done[j] = 1;
                denied = denied || !items[j].allowed;
            }
        }
    }
    return RRL_REDIS_OK;
}
