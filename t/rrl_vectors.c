/*
 * Drives the module's own rate arithmetic (rrl_algo_parse_rate,
 * rrl_algo_check_params, rrl_algo_decide) with the shared test vectors, so
 * that t/test_vectors.py can hold the local store and lua/ratelimit.lua to
 * the same answers.  Linked with src/rrl_algo.c and src/rrl_util.c only:
 * APR, no httpd.
 *
 * stdin, one command per line:
 *   LIMIT RATE ALGORITHM BURST|- COST [keep]   parse and check as RateLimit
 *     -> "PARAMS alg count period burst interval unit cost" or "ERROR text"
 *     does; the state kept so far is forgotten, unless "keep" (the limit
 *     changed under the same name: the state another algorithm wrote stays,
 *     as it does in both stores)
 *   STEP NOW COST MODE [UNTIL]             decide with the state kept so far
 *     (MODE 1, a give-back: UNTIL what the spend given back said of itself)
 *     -> "OUT allowed remaining reset retry write ttl v0 v1 v2 alg exp"
 *     alg: the algorithm of the state kept after the step (-1: none),
 *     exp: until when it is kept (0: none)
 *   SIPHASH LEN                            rrl_util_siphash128 of the bytes
 *     -> "HASH hex"                          0..LEN-1 keyed with 00..0f
 *   PLAN TEXT...                           the limit's plan is TEXT (a
 *     -> "PLANNED 1 count period burst interval unit", "PLANNED 2" (off:
 *     steps allow and keep nothing) or "PLANNED 3 why" (it does not
 *     parse or fit: the limit's own numbers), as rrl_algo_parse_plan and
 *     rrl_algo_plan_params answer; later steps decide with it
 *   NOPLAN                                 no plan: the limit's numbers
 * The state is forgotten when its ttl has passed, as both stores do.
 */
#include "apr_general.h"
#include "apr_strings.h"

#include <stdio.h>
#include <string.h>

#include "rrl_algo.h"
#include "rrl_util.h"

int main(void)
{
    apr_pool_t *pool;
    char line[1024];
    rrl_params_t p, limit;
    apr_int64_t cost = 1, st[3] = { 0, 0, 0 }, expires = 0;
    int stored = RRL_ALG_NONE, have = 0, off = 0;

    apr_initialize();
    apr_pool_create(&pool, NULL);
    memset(&p, 0, sizeof(p));

    while (fgets(line, sizeof(line), stdin)) {
        char rate[256], alg[64], burst[64], keep[8];
        long long now, c, until = 0;
        int mode, nf;

        if ((nf = sscanf(line, "LIMIT %255s %63s %63s %lld %7s", rate, alg,
                        burst, &c, keep)) >= 4) {
            const char *err;
            int a, burst_given = strcmp(burst, "-") != 0;

            memset(&p, 0, sizeof(p));
            if (nf < 5 || strcmp(keep, "keep") != 0) {
                stored = RRL_ALG_NONE;
            }
            have = 0;
            cost = c;
            if ((a = rrl_util_keyword(rrl_algo_names, alg)) < 0) {
                printf("ERROR unknown algorithm %s\n", alg);
                fflush(stdout);
                continue;
            }
            p.algorithm = a;
            err = rrl_algo_parse_rate(pool, rate, &p.count, &p.period);
            if (!err) {
                p.burst = burst_given ? apr_atoi64(burst) : p.count;
                err = rrl_algo_check_params(pool, rate, &p, cost, burst_given);
            }
            if (err) {
                printf("ERROR %s\n", err);
            }
            else {
                have = 1;
                off = 0;
                limit = p;
                printf("PARAMS %d %" APR_INT64_T_FMT " %" APR_INT64_T_FMT
                       " %" APR_INT64_T_FMT " %" APR_INT64_T_FMT
                       " %" APR_INT64_T_FMT " %" APR_INT64_T_FMT "\n",
                       p.algorithm, p.count, p.period, p.burst, p.interval,
                       p.unit, cost);
            }
        }
        else if (sscanf(line, "SIPHASH %lld", &c) == 1 && c >= 0
                 && c <= 255) {
            unsigned char k[16], msg[256];
            apr_uint64_t h[2];
            int i;

            for (i = 0; i < 16; i++) {
                k[i] = (unsigned char)i;
            }
            for (i = 0; i < c; i++) {
                msg[i] = (unsigned char)i;
            }
            rrl_util_siphash128(k, (const char *)msg, (apr_size_t)c, h);
            printf("HASH ");
            for (i = 0; i < 16; i++) {
                printf("%02x", (unsigned)(h[i / 8] >> (8 * (i % 8))) & 0xff);
            }
            printf("\n");
        }
        else if ((strncmp(line, "PLAN ", 5) == 0
                  || strcmp(line, "NOPLAN\n") == 0) && have) {
            rrl_algo_plan_t pl;
            const char *err = NULL;

            line[strcspn(line, "\n")] = '\0';
            limit.capped = 1;         /* a limit with plans= */
            p = limit;
            off = 0;
            if (line[0] == 'N') {
                printf("PLANNED 0\n");
            }
            else if ((err = rrl_algo_parse_plan(pool, line + 5, &pl)) == NULL
                     && pl.off) {
                off = 1;
                printf("PLANNED 2\n");
            }
            else if (err || (err = rrl_algo_plan_params(pool, &pl, &limit,
                                                        cost, &p))) {
                p = limit;
                printf("PLANNED 3 %s\n", err);
            }
            else {
                printf("PLANNED 1 %" APR_INT64_T_FMT " %" APR_INT64_T_FMT
                       " %" APR_INT64_T_FMT " %" APR_INT64_T_FMT
                       " %" APR_INT64_T_FMT "\n", p.count, p.period,
                       p.burst, p.interval, p.unit);
            }
        }
        else if (sscanf(line, "STEP %lld %lld %d %lld", &now, &c, &mode,
                        &until) >= 3 && have && mode >= 0 && mode <= 1
                 && off) {
            /* the limit does not apply: allowed, nothing read or kept */
            printf("OUT 1 0 0 0 0 0 %" APR_INT64_T_FMT " %" APR_INT64_T_FMT
                   " %" APR_INT64_T_FMT " %d %" APR_INT64_T_FMT "\n", st[0],
                   st[1], st[2], now >= expires ? RRL_ALG_NONE : stored,
                   now >= expires ? (apr_int64_t)0 : expires);
        }
        else if (sscanf(line, "STEP %lld %lld %d %lld", &now, &c, &mode,
                        &until) >= 3 && have && mode >= 0 && mode <= 1) {
            rrl_outcome_t o;

            if (now >= expires) {
                stored = RRL_ALG_NONE;
            }
            rrl_algo_decide(&p, c, (rrl_mode_e)mode, until, st, stored,
                            now, &o);
            /* what the store keeps: all or nothing, decided by the caller;
             * a single limit commits when it is allowed; a cut stands
             * whatever is decided */
            if (o.cut) {
                st[0] = o.cut_to;
                expires = now + o.cut_ttl;
                stored = p.algorithm;
            }
            if (o.allowed && o.write) {
                if (o.ttl > 0) {
                    memcpy(st, o.next, sizeof(st));
                    expires = now + o.ttl;
                    stored = p.algorithm;
                }
                else {
                    stored = RRL_ALG_NONE;
                }
            }
            printf("OUT %d %" APR_INT64_T_FMT " %" APR_INT64_T_FMT
                   " %" APR_INT64_T_FMT " %d %" APR_INT64_T_FMT
                   " %" APR_INT64_T_FMT " %" APR_INT64_T_FMT
                   " %" APR_INT64_T_FMT " %d %" APR_INT64_T_FMT "\n",
                   o.allowed, o.remaining, o.reset, o.retry, o.write, o.ttl,
                   o.next[0], o.next[1], o.next[2], stored,
                   stored == RRL_ALG_NONE ? (apr_int64_t)0 : expires);
        }
        else {
            printf("ERROR bad command\n");
        }
        fflush(stdout);
    }
    apr_pool_destroy(pool);
    apr_terminate();
    return 0;
}
