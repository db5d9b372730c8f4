/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * plans= on a request's path: before its items are decided, each one's
 * plan (plans=FILE: the file's numbers; plans=redis: the key of its plan,
 * which the script reads in the same EVALSHA); after, what the decision
 * said of it (counted, a plan that does not parse logged once a minute,
 * an item whose plan is off dropped); and each child's memory of the last
 * plan Redis gave a key, which RateLimitOnError local decides with.
 */

#ifndef RRL_PLAN_H
#define RRL_PLAN_H

#include "rrl.h"

void rrl_plan_child_init(apr_pool_t *pchild, server_rec *s);
int rrl_plan_items(request_rec *r, rrl_item_t *items, int n,
                   const char *prefix, int tag, int redis);
int rrl_plan_fallback(request_rec *r, rrl_item_t *items, int n);
int rrl_plan_settle(request_rec *r, rrl_item_t *items, int n,
                    rrl_source_e src);

#endif /* RRL_PLAN_H */
