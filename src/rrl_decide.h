/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The decision: the access and fixups hooks build a request's items,
 * decide them (deny cache, then the configured store, then
 * RateLimitOnError) and answer with headers, environment and status; the
 * log hook spends what count= limits owe and counts the result.
 */

#ifndef RRL_DECIDE_H
#define RRL_DECIDE_H

#include "rrl.h"

void rrl_decide_retrieve(void);
int rrl_decide_protocol_switch(conn_rec *c, request_rec *r, server_rec *s,
                               const char *protocol);
int rrl_decide_access(request_rec *r);
int rrl_decide_fixups(request_rec *r);
int rrl_decide_log(request_rec *r);

#endif /* RRL_DECIDE_H */
