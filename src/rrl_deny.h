/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The deny cache of each child: a key Redis denied until later is
 * answered in the child, without Redis, until then or for a second,
 * whichever is sooner.
 */

#ifndef RRL_DENY_H
#define RRL_DENY_H

#include "rrl.h"

void rrl_deny_child_init(apr_pool_t *pchild, server_rec *s);
int rrl_deny_ready(void);
rrl_item_t *rrl_deny_lookup(apr_pool_t *p, rrl_item_t *items, int n,
                            apr_time_t now);
void rrl_deny_remember(rrl_item_t *it, apr_time_t now);

#endif /* RRL_DENY_H */
