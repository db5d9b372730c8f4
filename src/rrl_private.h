/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * Included by every file of src/ that logs or reads the module's
 * configuration, first: which module their messages belong to (so that
 * "LogLevel redis_ratelimit:trace2" reaches them).  Never by
 * mod_redis_ratelimit.c, whose AP_DECLARE_MODULE says the same.
 */

#ifndef RRL_PRIVATE_H
#define RRL_PRIVATE_H

#include "rrl.h"

#include "http_log.h"

APLOG_USE_MODULE(redis_ratelimit);

#endif /* RRL_PRIVATE_H */
