/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * SetHandler redis-ratelimit-status: the counters of all children as HTML,
 * ?auto, ?json and ?metrics, and ?health for load balancers.
 */

#ifndef RRL_STATUS_H
#define RRL_STATUS_H

#include "rrl.h"

int rrl_status_handler(request_rec *r);

#endif /* RRL_STATUS_H */
