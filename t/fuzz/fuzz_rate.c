/*
 * libFuzzer: the RateLimit directive (rrl_limit_cmd: RATE, then
 * rrl_algo_parse_rate, every option, rrl_algo_check_params, default names
 * from the enclosing sections) and RateLimitConcurrency
 * (rrl_limit_concurrency_cmd), and the algorithms (rrl_algo_decide) at the
 * parameters they accept.
 *
 * Input: lines.  "<" C ARGS adds an enclosing section, outermost first: C
 * picks the kind from the list below, ARGS are its arguments as httpd keeps
 * them (with the closing '>').  "|HANDLER" puts "SetHandler HANDLER" in the
 * innermost section.  Any other line is one argument of a RateLimit
 * directive; an empty line ends one directive, and the next starts in the
 * same section (so that names can clash).  A directive whose first
 * argument starts with "~" is a RateLimitConcurrency (the "~" dropped).
 */
#include "apr_strings.h"

#include <string.h>

#include "rrl_algo.h"
#include "rrl_config.h"
#include "rrl_limit.h"
#include "rrl_option.h"
#include "fuzz.h"

#define MAX_SECTIONS 4
#define MAX_DIRECTIVES 8
#define MAX_ARGS 24

static apr_pool_t *root;

static const char *const kinds[] = {
    "<Location", "<LocationMatch", "<Directory", "<DirectoryMatch", "<Files",
    "<FilesMatch", "<If", "<ElseIf", "<Else", "<VirtualHost", "<IfModule",
    "<Proxy", "<ProxyMatch", "<IfDefine", "<Macro", "<IfVersion"
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    apr_initialize();
    apr_pool_create(&root, NULL);
    return 0;
}

/* What every accepted limit must be */
static void check_limit(const rrl_limit_t *l)
{
    const char *c;
    apr_size_t len = strlen(l->name);

    RRL_FUZZ_ASSERT(len >= 1 && len <= RRL_NAME_MAX);
    for (c = l->name; *c; c++) {
        RRL_FUZZ_ASSERT(rrl_option_name_char(*c));
    }
    RRL_FUZZ_ASSERT(l->ipv6_prefix >= 1 && l->ipv6_prefix <= 128);
    if (l->p.algorithm == RRL_ALG_CONCURRENCY) {
        RRL_FUZZ_ASSERT(l->p.count >= 1 && l->p.count <= 1000000
                        && l->p.burst == l->p.count && l->cost == 1
                        && !l->statuses);
        RRL_FUZZ_ASSERT(!l->lease_given
                        || (l->p.period >= RRL_USEC_PER_SEC
                            && l->p.period <= 86400 * RRL_USEC_PER_SEC
                            && l->p.interval == (l->p.period + 1) / 2));
        return;
    }
    RRL_FUZZ_ASSERT(l->p.count >= 1);
    RRL_FUZZ_ASSERT(l->p.period >= RRL_USEC_PER_SEC
                    && l->p.period <= RRL_MAX_PERIOD
                    && l->p.period % RRL_USEC_PER_SEC == 0);
    RRL_FUZZ_ASSERT(l->p.count <= l->p.period);
    RRL_FUZZ_ASSERT(l->p.interval >= 1
                    && l->p.interval * l->p.count >= l->p.period
                    && (l->p.interval - 1) * l->p.count < l->p.period);
    RRL_FUZZ_ASSERT(l->cost >= 1 && l->cost <= l->p.burst);
    RRL_FUZZ_ASSERT(l->p.burst >= 1);
    if (l->p.algorithm == RRL_ALG_GCRA
        || l->p.algorithm == RRL_ALG_TOKEN_BUCKET) {
        RRL_FUZZ_ASSERT(l->p.burst <= RRL_MAX_REFILL / l->p.interval);
    }
    else {
        RRL_FUZZ_ASSERT(l->p.burst == l->p.count);
    }
    if (l->p.algorithm == RRL_ALG_SLIDING_WINDOW) {
        RRL_FUZZ_ASSERT(l->p.unit == 1 || l->p.unit == 1000
                        || l->p.unit == 1000000);
        RRL_FUZZ_ASSERT(l->p.count <= RRL_MAX_PRODUCT
                                      / (l->p.period / l->p.unit));
    }
    if (l->statuses) {
        int i;

        RRL_FUZZ_ASSERT(l->nstatuses >= 1);
        for (i = 0; i < l->nstatuses; i++) {
            RRL_FUZZ_ASSERT(l->statuses[i] >= 100 && l->statuses[i] <= 599);
        }
    }
}

/* A few decisions in a row, the state kept as the stores keep it; of a
 * concurrency limit, slots taken, released and renewed, never more held
 * than it has, never fewer than were taken and not given back (while the
 * lease runs) */
static void run_algo(const rrl_limit_t *l, unsigned seed)
{
    apr_int64_t st[3] = { 0, 0, 0 }, expires = 0, until = 0;
    apr_int64_t now = APR_INT64_C(1700000000000000);
    const apr_int64_t steps[] = { 0, 0, 1, l->p.interval, l->p.period / 2,
                                  l->p.period, 3 * l->p.period, 7 };
    int slots = l->p.algorithm == RRL_ALG_CONCURRENCY;
    int stored = RRL_ALG_NONE, i;

    for (i = 0; i < 8; i++) {
        rrl_outcome_t o;
        /* spends, and give-backs of the last spend (or of a made-up one);
         * slots renewed too */
        rrl_mode_e mode = (rrl_mode_e)((seed >> (2 * i)) % 3 == 2);

        if (slots && (seed >> (3 * i + 1)) % 4 == 3) {
            mode = RRL_MODE_RENEW;
        }
        now += steps[(seed >> i) % 8];
        if (now >= expires) {
            stored = RRL_ALG_NONE;
        }
        if (mode != RRL_MODE_SPEND && (seed >> (3 * i)) % 4 == 0) {
            until = now + steps[(seed >> (i + 1)) % 8];
        }
        rrl_algo_decide(&l->p, l->cost, mode, until, st, stored, now, &o);
        if (mode == RRL_MODE_SPEND && o.allowed) {
            until = now + o.reset;
        }
        if (slots && mode == RRL_MODE_RENEW && o.reset > 0) {
            until = now;
        }
        if (slots) {
            RRL_FUZZ_ASSERT(o.reset == 0 || o.reset == l->p.period);
            RRL_FUZZ_ASSERT(o.allowed || o.retry == RRL_USEC_PER_SEC);
        }
        RRL_FUZZ_ASSERT(o.remaining >= 0 && o.remaining <= l->p.burst);
        RRL_FUZZ_ASSERT(o.reset >= 0 && o.retry >= 0 && o.ttl >= 0);
        RRL_FUZZ_ASSERT(o.allowed || o.retry > 0);
        if (o.allowed && o.write) {
            if (o.ttl > 0) {
                memcpy(st, o.next, sizeof(st));
                expires = now + o.ttl;
                stored = l->p.algorithm;
            }
            else {
                stored = RRL_ALG_NONE;
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p, *ptemp;
    char *text, *line, *next;
    ap_directive_t sections[MAX_SECTIONS], handler, self;
    server_rec server;
    cmd_parms cmd;
    rrl_dir_conf_t *dc;
    char *argv[MAX_ARGS];
    command_rec rate = { .name = "RateLimit" };
    command_rec conc = { .name = "RateLimitConcurrency" };
    int argc = 0, nsections = 0, ndirectives = 0, done = 0;
    unsigned seed = 2166136261u;
    size_t i;

    for (i = 0; i < size; i++) {
        seed = (seed ^ data[i]) * 16777619u;
    }

    apr_pool_create(&p, root);
    apr_pool_create(&ptemp, p);
    text = apr_pstrmemdup(p, (const char *)data, size);
    memset(sections, 0, sizeof(sections));
    memset(&handler, 0, sizeof(handler));
    memset(&self, 0, sizeof(self));
    memset(&server, 0, sizeof(server));
    memset(&cmd, 0, sizeof(cmd));
    self.directive = "RateLimit";
    self.filename = "/fuzz/httpd.conf";
    cmd.pool = p;
    cmd.temp_pool = ptemp;
    cmd.server = &server;
    cmd.directive = &self;
    cmd.path = "/";
    dc = rrl_config_create_dir(p, "/");

    for (line = text; !done; line = next) {
        char *nl = strchr(line, '\n');

        if (nl) {
            *nl = '\0';
            next = nl + 1;
        }
        else {
            next = NULL;
            done = 1;
        }
        if (line[0] == '<' && line[1] && argc == 0 && ndirectives == 0
            && nsections < MAX_SECTIONS) {
            ap_directive_t *d = &sections[nsections];

            d->directive = kinds[(unsigned char)line[1] % 16];
            d->args = line + 2;
            d->filename = self.filename;
            d->parent = nsections ? &sections[nsections - 1] : NULL;
            if (strcmp(d->directive, "<VirtualHost") == 0) {
                server.is_virtual = 1;
            }
            nsections++;
            continue;
        }
        if (line[0] == '|' && nsections && !handler.directive) {
            handler.directive = "SetHandler";
            handler.args = line + 1;
            handler.parent = &sections[nsections - 1];
            sections[nsections - 1].first_child = &handler;
            continue;
        }
        if (line[0] && argc < MAX_ARGS) {
            argv[argc++] = line;
        }
        if ((!line[0] || done) && argc) {
            const char *err;
            int before = dc->limits ? dc->limits->nelts : 0;

            self.parent = nsections ? &sections[nsections - 1] : NULL;
            self.line_num = (unsigned)(ndirectives + 1);
            self.args = argv[0];
            if (argv[0][0] == '~') {
                argv[0]++;
                self.directive = conc.name;
                cmd.cmd = &conc;
                err = rrl_limit_concurrency_cmd(&cmd, dc, argc, argv);
            }
            else {
                self.directive = rate.name;
                cmd.cmd = &rate;
                err = rrl_limit_cmd(&cmd, dc, argc, argv);
            }
            if (err) {
                RRL_FUZZ_ASSERT(*err);
            }
            else if (strcasecmp(argv[0], "off") == 0) {
                RRL_FUZZ_ASSERT(dc->off && !dc->limits);
            }
            else {
                const rrl_limit_t *l;

                RRL_FUZZ_ASSERT(dc->limits
                                && dc->limits->nelts == before + 1);
                l = APR_ARRAY_IDX(dc->limits, before, rrl_limit_t *);
                check_limit(l);
                if (l->p.algorithm == RRL_ALG_CONCURRENCY
                    && !l->lease_given) {
                    /* as check_config sets it */
                    rrl_limit_t *w = (rrl_limit_t *)l;

                    w->p.period = RRL_DEFAULT_LEASE;
                    w->p.interval = (w->p.period + 1) / 2;
                }
                run_algo(l, seed);
            }
            argc = 0;
            if (++ndirectives == MAX_DIRECTIVES) {
                break;
            }
        }
    }
    apr_pool_destroy(p);
    return 0;
}
