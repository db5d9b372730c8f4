/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The status handler's ?metrics, in the Prometheus text format.
 */

#ifndef RRL_METRICS_H
#define RRL_METRICS_H

#include "rrl.h"
#include "rrl_counters.h"

/* The le= label of latency bucket b: its bound in seconds, or "+Inf" */
const char *rrl_metrics_le(apr_pool_t *p, int b);

/* ?metrics of every child's counters in sn */
void rrl_metrics_write(request_rec *r, const rrl_snapshot_t *sn);

#endif /* RRL_METRICS_H */
