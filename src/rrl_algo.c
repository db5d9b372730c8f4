/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * The four algorithms in integer microseconds, and RATE.
 */

#include "apr_lib.h"
#include "apr_strings.h"

#include <string.h>

#include "rrl_algo.h"
#include "rrl_util.h"

const char *const rrl_algo_names[] = {
    "gcra", "token-bucket", "fixed-window", "sliding-window", "concurrency",
    NULL
};

static const struct {
    const char *name;
    apr_int64_t seconds;
} rrl_units[] = {
    { "s", 1 }, { "sec", 1 }, { "secs", 1 }, { "second", 1 },
    { "seconds", 1 },
    { "m", 60 }, { "min", 60 }, { "mins", 60 }, { "minute", 60 },
    { "minutes", 60 },
    { "h", 3600 }, { "hr", 3600 }, { "hour", 3600 }, { "hours", 3600 },
    { "d", 86400 }, { "day", 86400 }, { "days", 86400 },
    { NULL, 0 }
};

/* "N/PERIOD", PERIOD an optional multiplier and a unit: 100/h, 1000/15min */
const char *rrl_algo_parse_rate(apr_pool_t *p, const char *text,
                                apr_int64_t *count, apr_int64_t *period)
{
    const char *slash = strchr(text, '/'), *u;
    apr_int64_t n, mult = 1, max_n;
    int i;

    if (!slash) {
        goto bad;
    }
    if (!rrl_util_parse_int(apr_pstrndup(p, text, slash - text), 1,
                            APR_INT64_MAX, &n)) {
        goto bad;
    }
    u = slash + 1;
    if (apr_isdigit(*u)) {
        const char *d = u;

        while (apr_isdigit(*u)) {
            u++;
        }
        if (!rrl_util_parse_int(apr_pstrndup(p, d, u - d), 1, 366 * 86400,
                                &mult)) {
            return apr_psprintf(p, "'%s': the period's multiplier must be a "
                                "whole number from 1, such as 100/10s", text);
        }
    }
    for (i = 0; rrl_units[i].name; i++) {
        if (strcasecmp(u, rrl_units[i].name) == 0) {
            break;
        }
    }
    if (!rrl_units[i].name) {
        goto bad;
    }
    if (mult * rrl_units[i].seconds > 366 * 86400) {
        return apr_psprintf(p, "'%s': the period is longer than 366 days",
                            text);
    }
    *period = mult * rrl_units[i].seconds * RRL_USEC_PER_SEC;
    /* at most 1,000,000 per second: one unit refills in 1 us or more */
    max_n = *period;
    if (n > max_n) {
        return apr_psprintf(p, "'%s' is more than 1,000,000 per second, "
                            "the highest rate accepted", text);
    }
    *count = n;
    return NULL;

bad:
    return apr_psprintf(p, "'%s' is not a rate; expected N/PERIOD with N a "
                        "positive whole number and PERIOD s, sec, second, "
                        "m, min, minute, h, hr, hour, d or day (or their "
                        "plurals), optionally with a multiplier, such as "
                        "100/h or 1000/15min", text);
}

const char *rrl_algo_check_params(apr_pool_t *p, const char *rate,
                                  rrl_params_t *rp, apr_int64_t cost,
                                  int burst_given)
{
    const char *alg = rrl_algo_names[rp->algorithm];

    rp->interval = (rp->period + rp->count - 1) / rp->count;
    if (rp->algorithm == RRL_ALG_GCRA
        || rp->algorithm == RRL_ALG_TOKEN_BUCKET) {
        if (rp->burst > RRL_MAX_REFILL / rp->interval) {
            return apr_psprintf(p, "burst=%" APR_INT64_T_FMT " at %s would "
                                "take more than 35 years to refill; lower "
                                "burst or raise the rate", rp->burst, rate);
        }
        if (cost > rp->burst) {
            return apr_psprintf(p, "cost=%" APR_INT64_T_FMT " is above "
                                "burst=%" APR_INT64_T_FMT ", so no request "
                                "could ever be allowed; accepted: cost from "
                                "1 to burst", cost, rp->burst);
        }
        return NULL;
    }
    if (burst_given) {
        return apr_psprintf(p, "burst= has no meaning for algorithm=%s; it "
                            "is accepted only with gcra and token-bucket",
                            alg);
    }
    rp->burst = rp->count;
    if (cost > rp->count) {
        return apr_psprintf(p, "cost=%" APR_INT64_T_FMT " is above the "
                            "%" APR_INT64_T_FMT " of %s, so no request could "
                            "ever be allowed; accepted: cost from 1 to %"
                            APR_INT64_T_FMT, cost, rp->count, rate,
                            rp->count);
    }
    if (rp->algorithm == RRL_ALG_SLIDING_WINDOW) {
        /* elapsed time in the finest unit that keeps N x PERIOD exact */
        static const apr_int64_t units[] = { 1, 1000, 1000000 };
        int i;

        for (i = 0; i < 3; i++) {
            if (rp->count <= RRL_MAX_PRODUCT / (rp->period / units[i])) {
                rp->unit = units[i];
                return NULL;
            }
        }
        return apr_psprintf(p, "%s is too large for algorithm=sliding-window "
                            "(N x PERIOD in seconds must stay below 2^52); "
                            "use gcra or fixed-window for it", rate);
    }
    return NULL;
}

/*
 * A plan, as plans= gives it (a line of a plans file after its value; the
 * script parses a plan kept in Redis the same way, t/vectors.json holds
 * both to it): "off", or RATE then at most one burst=N, words separated by
 * spaces or tabs.  RATE is rrl_algo_parse_rate's, burst= what RateLimit
 * accepts.
 */
const char *rrl_algo_parse_plan(apr_pool_t *p, const char *text,
                                rrl_algo_plan_t *pl)
{
    char *words = apr_pstrdup(p, text), *state, *w;
    const char *err;
    int i;

    memset(pl, 0, sizeof(*pl));
    for (i = 0, w = apr_strtok(words, " \t", &state); w;
         i++, w = apr_strtok(NULL, " \t", &state)) {
        if (i == 0 && strcasecmp(w, "off") == 0) {
            pl->off = 1;
        }
        else if (i == 0) {
            if ((err = rrl_algo_parse_rate(p, w, &pl->count, &pl->period))
                != NULL) {
                return err;
            }
            pl->rate = w;
        }
        else if (pl->off || pl->burst || strncasecmp(w, "burst=", 6) != 0) {
            return apr_psprintf(p, "'%s' is not accepted after %s; "
                                "expected RATE [burst=N] or off", w,
                                pl->off ? "off" : "the rate");
        }
        else if (!rrl_util_parse_int(w + 6, 1, RRL_MAX_UNITS, &pl->burst)) {
            return apr_psprintf(p, "%s is not accepted; expected burst= a "
                                "positive whole number", w);
        }
    }
    if (i == 0) {
        return "no plan; expected RATE [burst=N] or off";
    }
    return NULL;
}

/* The numbers a limit decides with under plan pl (not off): its own with
 * the plan's RATE and burst, checked as RateLimit checks its own */
const char *rrl_algo_plan_params(apr_pool_t *p, const rrl_algo_plan_t *pl,
                                 const rrl_params_t *limit, apr_int64_t cost,
                                 rrl_params_t *out)
{
    *out = *limit;
    out->count = pl->count;
    out->period = pl->period;
    out->burst = pl->burst ? pl->burst : pl->count;
    out->unit = 0;
    return rrl_algo_check_params(p, pl->rate ? pl->rate : "the plan's rate",
                                 out, cost, pl->burst != 0);
}

/*
 * The four algorithms, in integer microseconds.  st[] is the stored state
 * (present == 0: nothing stored, which every algorithm reads as "nothing
 * used"), now the store's clock.  lua/ratelimit.lua is the same code for
 * Redis; t/vectors.json holds the cases both must answer alike.  Both
 * stores keep with a state the algorithm that wrote it, and a state of
 * another one reads as nothing stored (rrl_algo_decide).
 *
 *   gcra           st = { tat }            theoretical arrival time
 *   token-bucket   st = { tokens, ts }     tokens as of ts
 *   fixed-window   st = { start, count }   start: of the window, in us
 *   sliding-window st = { start, count, previous window's count }
 *
 * A window is kept by its start in time, not its number, so that a limit
 * whose period changed reads a window of the old period as one that
 * started then (a number would be read in units of the new period).
 */
static apr_int64_t rrl_floor_div(apr_int64_t a, apr_int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* gcra: st = { tat }, the theoretical arrival time.  A tat further than
 * tau ahead (the numbers changed, or the clock went back) holds: a key
 * keeps what it spent.  But for plans= (p->capped), where a key's numbers
 * change by the day, it owes at most tau: raised from 100/h to 5000/min
 * after spending its hour, a key may go on at 5000/min at once rather
 * than wait out the hour */
static void rrl_gcra(const rrl_params_t *p, apr_int64_t cost,
                     const apr_int64_t *st, int present, apr_int64_t now,
                     rrl_outcome_t *o)
{
    apr_int64_t T = p->interval;
    apr_int64_t tau = p->burst * T;
    apr_int64_t base = (present && st[0] > now) ? st[0] : now;
    apr_int64_t want;

    if (p->capped && base - now > tau) {
        /* plans=: spent under other numbers (a plan changed) beyond what
         * these hold: all of these spent, from now on; a state kept as
         * such, so that time repays it */
        base = now + tau;
        o->cut = 1;
        o->cut_to = base;
        o->cut_ttl = tau;
    }
    want = base + cost * T;

    o->allowed = want - now <= tau;
    if (o->allowed) {
        o->write = 1;
        o->next[0] = want;
        o->ttl = want - now;
        base = want;
    }
    else {
        o->retry = want - now - tau;
    }
    o->remaining = tau - (base - now) > 0 ? (tau - (base - now)) / T : 0;
    o->reset = base - now;
}

/* token-bucket's tokens as of now, and since when the partial refill runs */
static void rrl_tb_refill(const rrl_params_t *p, const apr_int64_t *st,
                          int present, apr_int64_t now, apr_int64_t *tokens,
                          apr_int64_t *ts)
{
    apr_int64_t T = p->interval;

    *tokens = present ? st[0] : p->burst;
    *ts = present ? st[1] : now;
    if (now > *ts && *tokens < p->burst) {
        apr_int64_t add = (now - *ts) / T;

        if (add >= p->burst - *tokens) {
            *tokens = p->burst;
        }
        else {
            *tokens += add;
            *ts += add * T;
        }
    }
    if (*tokens >= p->burst) {
        *tokens = p->burst;
        *ts = now;
    }
}

/* token-bucket: st = { tokens, ts }, tokens as of ts */
static void rrl_token_bucket(const rrl_params_t *p, apr_int64_t cost,
                             const apr_int64_t *st, int present,
                             apr_int64_t now, rrl_outcome_t *o)
{
    apr_int64_t T = p->interval, tokens, ts;

    rrl_tb_refill(p, st, present, now, &tokens, &ts);
    o->allowed = tokens >= cost;
    if (o->allowed) {
        tokens -= cost;
        o->write = 1;
        o->next[0] = tokens;
        o->next[1] = ts;
    }
    else {
        o->retry = (cost - tokens) * T - (now - ts);
    }
    o->remaining = tokens;
    o->reset = tokens >= p->burst ? 0 : (p->burst - tokens) * T
                                         - (now - ts);
    o->ttl = o->reset;
}

/* fixed-window: st = { start, count } */
static void rrl_fixed_window(const rrl_params_t *p, apr_int64_t cost,
                             const apr_int64_t *st, int present,
                             apr_int64_t now, rrl_outcome_t *o)
{
    apr_int64_t n = p->count, P = p->period;
    apr_int64_t w = now / P * P, c = 0, end;

    if (present) {
        if (st[0] >= w) {
            w = st[0];           /* a clock going back stays put */
            c = st[1];
        }
    }
    end = w + P;
    o->allowed = c + cost <= n;
    if (o->allowed) {
        c += cost;
        o->write = 1;
        o->next[0] = w;
        o->next[1] = c;
        o->ttl = end - now;
    }
    else {
        o->retry = end - now;
    }
    o->remaining = n - c > 0 ? n - c : 0;
    o->reset = c > 0 ? end - now : 0;
}

/* How long a sliding window's state matters: to the end of the next
 * window while this one has a count, else to the end of this one */
static apr_int64_t rrl_sw_left(apr_int64_t P, apr_int64_t w,
                               apr_int64_t curr, apr_int64_t prev,
                               apr_int64_t now)
{
    apr_int64_t left = curr > 0 ? w + 2 * P - now : prev > 0 ? w + P - now
                                                             : 0;

    return left > 0 ? left : 0;
}

/* sliding-window: st = { start, count, previous window's count } */
static void rrl_sliding_window(const rrl_params_t *p, apr_int64_t cost,
                               const apr_int64_t *st, int present,
                               apr_int64_t now, rrl_outcome_t *o)
{
    apr_int64_t n = p->count, P = p->period;
    apr_int64_t U = p->unit, PU = P / U;
    apr_int64_t w = now / P * P, curr = 0, prev = 0, e, weight, avail;

    if (present) {
        if (st[0] >= w) {
            w = st[0];
            curr = st[1];
            prev = st[2];
        }
        else if (st[0] == w - P) {
            prev = st[1];
        }
    }
    e = now - w;
    if (e < 0) {
        e = 0;
    }
    weight = PU - e / U;                 /* of the previous window */
    /* the most this window may hold: prev*weight + total*PU <= N*PU */
    avail = rrl_floor_div(n * PU - prev * weight, PU);
    o->allowed = curr + cost <= avail;
    if (o->allowed) {
        curr += cost;
        o->write = 1;
        o->next[0] = w;
        o->next[1] = curr;
        o->next[2] = prev;
        o->ttl = w + 2 * P - now;
    }
    else {
        /* the first moment this request would pass: later in this
         * window as the previous one fades, or else in the next */
        apr_int64_t a = n - curr - cost, at;

        if (a >= 0 && prev > 0 && PU - (a * PU) / prev < PU) {
            at = w + (PU - (a * PU) / prev) * U;
        }
        else {
            apr_int64_t b = n - cost, e2 = 0;

            if (curr > 0) {
                e2 = PU - (b * PU) / curr;
                e2 = e2 > 0 ? e2 : 0;
            }
            at = w + P + e2 * U;
        }
        o->retry = at - now;
    }
    o->remaining = avail - curr > 0 ? avail - curr : 0;
    o->reset = rrl_sw_left(P, w, curr, prev, now);
}

/*
 * Giving back (count=: the final status was not one that counts) what a
 * spend took, the spend's outcome having said until when it mattered
 * (until = its now + reset).  Never more than the spend still holds: time
 * refills gcra and token-bucket from the oldest spend on, so what is left
 * of this one is at most until - now of time, and at most what the state
 * holds beyond now; a window gives back only in the window it was spent
 * in (until is that window's end; for sliding-window, the end of the next
 * one, where its count is the previous).  The outcome: allowed, reset the
 * time the state is kept now (ttl 0: it is deleted).
 */
static apr_int64_t rrl_min3(apr_int64_t a, apr_int64_t b, apr_int64_t c)
{
    a = a < b ? a : b;
    return a < c ? a : c;
}

static void rrl_gcra_back(const rrl_params_t *p, apr_int64_t cost,
                          apr_int64_t until, const apr_int64_t *st,
                          int present, apr_int64_t now, rrl_outcome_t *o)
{
    if (present && st[0] > now && until > now) {
        o->write = 1;
        o->next[0] = st[0] - rrl_min3(cost * p->interval, st[0] - now,
                                      until - now);
        o->ttl = o->next[0] - now;
    }
}

static void rrl_token_bucket_back(const rrl_params_t *p, apr_int64_t cost,
                                  apr_int64_t until, const apr_int64_t *st,
                                  int present, apr_int64_t now,
                                  rrl_outcome_t *o)
{
    apr_int64_t T = p->interval, tokens, ts, owed, back;

    rrl_tb_refill(p, st, present, now, &tokens, &ts);
    /* what the bucket lacks, in time to refill, less what comes back */
    owed = tokens >= p->burst ? 0 : (p->burst - tokens) * T - (now - ts);
    back = rrl_min3(cost * T, owed, until - now);
    if (back > 0) {
        apr_int64_t left = owed - back, k = (left + T - 1) / T;

        o->write = 1;
        o->next[0] = p->burst - k;
        o->next[1] = now - (k * T - left);
        o->ttl = left;
    }
}

static void rrl_fixed_window_back(const rrl_params_t *p, apr_int64_t cost,
                                  apr_int64_t until, const apr_int64_t *st,
                                  int present, apr_int64_t now,
                                  rrl_outcome_t *o)
{
    if (present && until > now && st[0] == until - p->period && st[1] > 0) {
        o->write = 1;
        o->next[0] = st[0];
        o->next[1] = st[1] - (cost < st[1] ? cost : st[1]);
        o->ttl = o->next[1] > 0 ? until - now : 0;
    }
}

static void rrl_sliding_window_back(const rrl_params_t *p, apr_int64_t cost,
                                    apr_int64_t until, const apr_int64_t *st,
                                    int present, apr_int64_t now,
                                    rrl_outcome_t *o)
{
    apr_int64_t P = p->period, start = until - 2 * P;
    int i = !present || until <= now ? 0
            : st[0] == start ? 1 : st[0] == start + P ? 2 : 0;

    if (i) {
        o->write = 1;
        memcpy(o->next, st, sizeof(o->next));
        o->next[i] -= cost < st[i] ? cost : st[i];
        o->ttl = rrl_sw_left(P, st[0], o->next[1], o->next[2], now);
    }
}

/*
 * concurrency (RateLimitConcurrency): requests in flight.  Time is cut in
 * epochs of half the lease (p->interval); a slot taken or renewed in
 * epoch e counts until epoch e + 2 ends, so a slot whose release never
 * comes (a child killed) is freed between one lease and one and a half
 * after it was last taken or renewed.  st holds the counts of the three
 * epochs that can still count, each as epoch * 2^21 + count, in place
 * epoch % 3; until is when the slot was taken or last renewed (which
 * names its epoch).  lua/ratelimit.lua keeps a slot as a member of a
 * sorted set scored by its own deadline instead: the same answer, to the
 * microsecond.
 */
#define RRL_CONC_BITS 21
#define RRL_CONC_MASK ((APR_INT64_C(1) << RRL_CONC_BITS) - 1)

/* The slots of st that count at now (the others zeroed into live), their
 * total, and the last epoch any of them counts in */
static apr_int64_t rrl_conc_live(const rrl_params_t *p, const apr_int64_t *st,
                                 int present, apr_int64_t now,
                                 apr_int64_t *live)
{
    apr_int64_t e = now / p->interval, total = 0;
    int j;

    for (j = 0; j < 3; j++) {
        apr_int64_t ej = present ? st[j] >> RRL_CONC_BITS : 0;

        live[j] = 0;
        if (present && (st[j] & RRL_CONC_MASK) && ej >= e - 2) {
            live[j] = st[j];       /* a later epoch: a clock gone back */
            total += st[j] & RRL_CONC_MASK;
        }
    }
    return total;
}

/* Write live as the next state: kept until its last epoch counts */
static void rrl_conc_store(const rrl_params_t *p, const apr_int64_t *live,
                           apr_int64_t now, rrl_outcome_t *o)
{
    apr_int64_t last = -1;
    int j;

    for (j = 0; j < 3; j++) {
        if ((live[j] & RRL_CONC_MASK) && live[j] >> RRL_CONC_BITS > last) {
            last = live[j] >> RRL_CONC_BITS;
        }
    }
    o->write = 1;
    memcpy(o->next, live, sizeof(o->next));
    o->ttl = last < 0 ? 0 : (last + 3) * p->interval - now;
}

/* Add n slots to epoch e's place in live */
static void rrl_conc_add(apr_int64_t *live, apr_int64_t e, apr_int64_t n)
{
    apr_int64_t *v = &live[e % 3];

    if (*v >> RRL_CONC_BITS != e) {
        *v = e << RRL_CONC_BITS;
    }
    *v += n;
}

/* Take n slots from epoch e's place, if they still count there: 1 if so */
static int rrl_conc_take(apr_int64_t *live, apr_int64_t e, apr_int64_t n)
{
    apr_int64_t *v = &live[e % 3], c = *v & RRL_CONC_MASK;

    if (*v >> RRL_CONC_BITS != e || c == 0) {
        return 0;
    }
    *v -= n < c ? n : c;
    return 1;
}

static void rrl_concurrency(const rrl_params_t *p, apr_int64_t cost,
                            const apr_int64_t *st, int present,
                            apr_int64_t now, rrl_outcome_t *o)
{
    apr_int64_t live[3], busy = rrl_conc_live(p, st, present, now, live);

    o->allowed = busy + cost <= p->count;
    if (o->allowed) {
        busy += cost;
        rrl_conc_add(live, now / p->interval, cost);
        rrl_conc_store(p, live, now, o);
    }
    else {
        o->retry = RRL_USEC_PER_SEC;   /* a slot may free at any moment */
    }
    o->remaining = p->count - busy > 0 ? p->count - busy : 0;
}

/* Release (RRL_MODE_REFUND) or renew (RRL_MODE_RENEW) the slot taken or
 * last renewed at until; a renewal moves it to now's epoch.  reset: the
 * lease it holds now, 0 when it no longer counted (its lease ran out) */
static void rrl_concurrency_back(const rrl_params_t *p, apr_int64_t cost,
                                 rrl_mode_e mode, apr_int64_t until,
                                 const apr_int64_t *st, int present,
                                 apr_int64_t now, rrl_outcome_t *o)
{
    apr_int64_t live[3];
    int held;

    rrl_conc_live(p, st, present, now, live);
    held = rrl_conc_take(live, until / p->interval, cost);
    if (held && mode == RRL_MODE_RENEW) {
        rrl_conc_add(live, now / p->interval, cost);
    }
    if (held) {
        rrl_conc_store(p, live, now, o);
    }
    o->allowed = 1;
    o->reset = held && mode == RRL_MODE_RENEW ? p->period : 0;
}

typedef void (*rrl_algo_fn)(const rrl_params_t *p, apr_int64_t cost,
                            const apr_int64_t *st, int present,
                            apr_int64_t now, rrl_outcome_t *o);
typedef void (*rrl_back_fn)(const rrl_params_t *p, apr_int64_t cost,
                            apr_int64_t until, const apr_int64_t *st,
                            int present, apr_int64_t now, rrl_outcome_t *o);

/* By rrl_alg_e, as rrl_algo_names */
static const rrl_algo_fn rrl_algos[] = {
    rrl_gcra, rrl_token_bucket, rrl_fixed_window, rrl_sliding_window,
    rrl_concurrency
};
static const rrl_back_fn rrl_algos_back[] = {
    rrl_gcra_back, rrl_token_bucket_back, rrl_fixed_window_back,
    rrl_sliding_window_back
};

/* st was written by stored_alg (RRL_ALG_NONE: nothing is stored): a
 * limit whose algorithm changed under the same name starts afresh, never
 * reads another algorithm's numbers as its own.  until: what a spend to
 * give back (RRL_MODE_REFUND) said of itself */
void rrl_algo_decide(const rrl_params_t *p, apr_int64_t cost, rrl_mode_e mode,
                     apr_int64_t until, const apr_int64_t *st,
                     int stored_alg, apr_int64_t now, rrl_outcome_t *o)
{
    int present = stored_alg == (int)p->algorithm;

    memset(o, 0, sizeof(*o));
    if (p->algorithm == RRL_ALG_CONCURRENCY && mode != RRL_MODE_SPEND) {
        rrl_concurrency_back(p, cost, mode, until, st, present, now, o);
        return;
    }
    if (mode == RRL_MODE_REFUND) {
        rrl_algos_back[p->algorithm](p, cost, until, st, present, now, o);
        o->allowed = 1;
        o->reset = o->ttl > 0 ? o->ttl : 0;
        return;
    }
    rrl_algos[p->algorithm](p, cost, st, present, now, o);
}
