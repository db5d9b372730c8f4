/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The status handler's one action, a POST: forget a key's state in the
 * local store, so that an operator can unblock a client without a full
 * restart (in Redis, deleting the key does it).
 */

#ifndef RRL_UNBLOCK_H
#define RRL_UNBLOCK_H

#include "rrl.h"

int rrl_unblock_post(request_rec *r);

#endif /* RRL_UNBLOCK_H */
