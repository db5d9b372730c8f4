/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * plans=FILE: per-key plans from a text file, one "VALUE RATE [burst=N]"
 * or "VALUE off" a line, "#" comments.  Checked against every limit that
 * uses it in check_config (apachectl -t), read into a hash table in shared
 * memory in post_config, and read again by whichever child first sees it
 * changed (at most one look a second per child): every child reads the one
 * table, whatever the size of the file.
 */

#ifndef RRL_PLAN_FILE_H
#define RRL_PLAN_FILE_H

#include "rrl.h"
#include "rrl_algo.h"

typedef struct rrl_plan_file rrl_plan_file_t;

/* What the status page shows of a plans file */
typedef struct {
    apr_uint32_t entries;         /* plans in force */
    apr_uint32_t capacity;        /* plans the table has room for */
} rrl_plan_file_stats_t;

int rrl_plan_file_check_config(apr_pool_t *pconf, apr_pool_t *ptemp);
apr_status_t rrl_plan_file_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                                       server_rec *s);
void rrl_plan_file_refresh(request_rec *r, rrl_plan_file_t *f);
int rrl_plan_file_lookup(rrl_plan_file_t *f, const char *value,
                         apr_size_t len, rrl_algo_plan_t *pl);
const char *rrl_plan_file_path(const rrl_plan_file_t *f);
void rrl_plan_file_stats(const rrl_plan_file_t *f,
                         rrl_plan_file_stats_t *st);

#endif /* RRL_PLAN_FILE_H */
