/*
 * libFuzzer: RateLimitExempt (rrl_config_cmd_exempt, on
 * apr_ipsubnet_create) and the test of a client against the list
 * (rrl_config_is_exempt).
 *
 * Input: lines.  "@" and 4 or 16 raw bytes: a client address to test (IPv4
 * or IPv6); any other line: one RateLimitExempt argument.  Each accepted
 * ADDRESS[/BITS] whose address is a whole IPv4 or IPv6 address must exempt
 * that address (and an IPv4 one its IPv4-mapped IPv6 form too, as a
 * dual-stack listener sees it).
 */
#include "apr_strings.h"

#include <arpa/inet.h>
#include <string.h>

#include "rrl_config.h"
#include "fuzz.h"

#define MAX_LINES 16

RRL_FUZZ_ROOT_POOL(root)

/* An address of family with the raw bytes ip (4 or 16) */
static apr_sockaddr_t *make_addr(apr_pool_t *p, int family,
                                 const unsigned char *ip)
{
    apr_sockaddr_t *sa;

    if (apr_sockaddr_info_get(&sa, NULL, family, 0, 0, p) != APR_SUCCESS) {
        return NULL;
    }
    memcpy(sa->ipaddr_ptr, ip, family == APR_INET ? 4 : 16);
    return sa;
}

static int exempts(apr_pool_t *p, const rrl_dir_conf_t *dc,
                   apr_sockaddr_t *sa)
{
    request_rec r;

    memset(&r, 0, sizeof(r));
    r.pool = p;
    r.useragent_addr = sa;
    return rrl_config_is_exempt(&r, dc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p, *ptemp;
    cmd_parms cmd;
    rrl_dir_conf_t *dc;
    const char *rest = (const char *)data, *end = rest + size;
    int n;

    apr_pool_create(&p, root);
    apr_pool_create(&ptemp, p);
    memset(&cmd, 0, sizeof(cmd));
    cmd.pool = p;
    cmd.temp_pool = ptemp;
    dc = rrl_config_create_dir(p, "/");

    for (n = 0; rest < end && n < MAX_LINES; n++) {
        const char *nl = memchr(rest, '\n', end - rest);
        apr_size_t len = (nl ? nl : end) - rest;
        char *line = apr_pstrmemdup(p, rest, len);

        rest += len + (nl != NULL);
        if (line[0] == '@' && (len == 5 || len == 17)) {
            apr_sockaddr_t *sa = make_addr(p, len == 5 ? APR_INET
                                                       : APR_INET6,
                                           (const unsigned char *)line + 1);

            if (sa) {
                exempts(p, dc, sa);
            }
            continue;
        }
        if (rrl_config_cmd_exempt(&cmd, dc, line) == NULL) {
            char *ip = apr_pstrdup(p, line), *slash = strchr(ip, '/');
            unsigned char a[16];

            RRL_FUZZ_ASSERT(dc->exempt && dc->exempt->nelts >= 1);
            if (slash) {
                *slash = '\0';
            }
            if (inet_pton(AF_INET, ip, a) == 1) {
                unsigned char m[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                        0xff, 0xff };
                apr_sockaddr_t *sa = make_addr(p, APR_INET, a);

                RRL_FUZZ_ASSERT(sa && exempts(p, dc, sa));
                memcpy(m + 12, a, 4);
                sa = make_addr(p, APR_INET6, m);
                RRL_FUZZ_ASSERT(sa && exempts(p, dc, sa));
            }
            else if (inet_pton(AF_INET6, ip, a) == 1) {
                apr_sockaddr_t *sa = make_addr(p, APR_INET6, a);

                RRL_FUZZ_ASSERT(sa && exempts(p, dc, sa));
            }
        }
    }
    apr_pool_destroy(p);
    return 0;
}
