/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * A limit's store key for a request: PREFIX[VHOST:]NAME:VALUE, the value
 * from key= (or the client address, IPv6 grouped by ipv6-prefix=), hashed
 * when long or not printable; and the Redis Cluster slot a key falls in.
 */

#ifndef RRL_KEY_H
#define RRL_KEY_H

#include "rrl.h"

const char *rrl_key_value(apr_pool_t *p, const char *v, apr_size_t len);
const char *rrl_key_build(request_rec *r, const rrl_limit_t *l,
                          const char *prefix, int tag, apr_size_t *lenp);
const char *rrl_key_of_value(apr_pool_t *p, const rrl_limit_t *l,
                             const char *prefix, const char *value, int tag,
                             apr_size_t *lenp);

/* Redis Cluster: the hash slot of a key */
#define RRL_SLOTS 16384
unsigned rrl_key_slot(const char *key, apr_size_t len);

#endif /* RRL_KEY_H */
