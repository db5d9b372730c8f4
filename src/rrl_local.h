/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The local store: a bounded table of the limits' state in shared memory,
 * shared by every child of one server, with striped robust locks.  It
 * decides when there is no Redis, and for RateLimitOnError local.
 */

#ifndef RRL_LOCAL_H
#define RRL_LOCAL_H

#include "rrl.h"

/* What the status page shows of the store */
typedef struct {
    int allocated;                /* 0: no limit can use it, none made */
    apr_size_t bytes;
    apr_uint64_t capacity;        /* keys it has room for */
    apr_uint64_t in_use;          /* keys whose state has not expired */
    apr_uint64_t evictions;       /* entries given up for another key's */
    apr_uint64_t live_evictions;  /* of those, entries still holding state */
} rrl_local_stats_t;

int rrl_local_needed(server_rec *s);
apr_status_t rrl_local_post_config(server_rec *s, apr_size_t want,
                                   int needed);
apr_status_t rrl_local_decide(request_rec *r, rrl_item_t *items, int n,
                              apr_int64_t now);
const apr_uint64_t *rrl_local_hash(rrl_item_t *it);
int rrl_local_forget(const char *key, apr_size_t len);
void rrl_local_stats(rrl_local_stats_t *sn);

#endif /* RRL_LOCAL_H */
