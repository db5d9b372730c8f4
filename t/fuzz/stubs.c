/*
 * The few httpd functions and objects that the areas under fuzzing refer
 * to, for the harnesses in t/fuzz/ (they run outside httpd, linked with the
 * objects of src/ they reach from t/fuzz/librrl.a).  Only logging, context
 * checks, ap_expr and the module's struct are stood in for; every parser
 * and builder fuzzed is the module's own code.
 *
 * Logging formats the message (so that a format and its arguments that do
 * not agree still show under ASan and UBSan) and drops it.  ap_expr, which
 * lives in the httpd binary, is replaced by a stand-in: a parsed key= is an
 * empty ap_expr_info_t, and evaluating it gives rrl_fuzz_expr_value; httpd's
 * parser of timeouts is copied.  What an object refers to but no harness
 * reaches aborts if it is ever called.
 */
#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_expr.h"
#include "ap_mpm.h"
#include "apr_strings.h"
#include "apr_lib.h"

#include <errno.h>
#include <stdlib.h>

#include "fuzz.h"

const char *rrl_fuzz_expr_value;
int rrl_fuzz_expr_fail;

/* what the module's files log as and read their configuration by */
module AP_MODULE_DECLARE_DATA redis_ratelimit_module;
AP_DECLARE_DATA server_rec *ap_server_conf;

static void rrl_fuzz_format(const char *fmt, va_list ap)
{
    char buf[8192];

    apr_vsnprintf(buf, sizeof(buf), fmt, ap);
}

AP_DECLARE(void) ap_log_error_(const char *file, int line, int module_index,
                               int level, apr_status_t status,
                               const server_rec *s, const char *fmt, ...)
{
    va_list ap;

    (void)file; (void)line; (void)module_index; (void)level; (void)status;
    (void)s;
    va_start(ap, fmt);
    rrl_fuzz_format(fmt, ap);
    va_end(ap);
}

AP_DECLARE(void) ap_log_perror_(const char *file, int line, int module_index,
                                int level, apr_status_t status, apr_pool_t *p,
                                const char *fmt, ...)
{
    va_list ap;

    (void)file; (void)line; (void)module_index; (void)level; (void)status;
    (void)p;
    va_start(ap, fmt);
    rrl_fuzz_format(fmt, ap);
    va_end(ap);
}

AP_DECLARE(void) ap_log_rerror_(const char *file, int line, int module_index,
                                int level, apr_status_t status,
                                const request_rec *r, const char *fmt, ...)
{
    va_list ap;

    (void)file; (void)line; (void)module_index; (void)level; (void)status;
    (void)r;
    va_start(ap, fmt);
    rrl_fuzz_format(fmt, ap);
    va_end(ap);
}

/* The harnesses build their cmd_parms for a plain directory context */
AP_DECLARE(const char *) ap_check_cmd_context(cmd_parms *cmd,
                                              unsigned forbidden)
{
    (void)cmd; (void)forbidden;
    return NULL;
}

AP_DECLARE(void) ap_str_tolower(char *s)
{
    for (; *s; s++) {
        *s = (char)apr_tolower(*s);
    }
}

AP_DECLARE(ap_expr_info_t *) ap_expr_parse_cmd_mi(const cmd_parms *cmd,
                                                  const char *expr,
                                                  unsigned int flags,
                                                  const char **err,
                                                  ap_expr_lookup_fn_t *lookup,
                                                  int module_index)
{
    ap_expr_info_t *info = apr_pcalloc(cmd->pool, sizeof(*info));
    const char *open = strstr(expr, "%{");

    (void)lookup;
    *err = NULL;
    /* enough of the syntax to reach the module's error path */
    if (open && !strchr(open, '}')) {
        *err = "Variable name missing or unterminated";
        return NULL;
    }
    info->filename = cmd->directive ? cmd->directive->filename : NULL;
    info->flags = flags;
    info->module_index = module_index;
    return info;
}

AP_DECLARE(const char *) ap_expr_str_exec(request_rec *r,
                                          const ap_expr_info_t *expr,
                                          const char **err)
{
    (void)r; (void)expr;
    if (rrl_fuzz_expr_fail) {
        *err = "stand-in evaluation failure";
        return NULL;
    }
    return rrl_fuzz_expr_value;
}

/* RateLimitConcurrency lease=DUR: httpd's parser of a timeout, as it is
 * (a number, then s, ms, mi[n] or h[r], anything after that ignored),
 * without its overflows */
AP_DECLARE(apr_status_t) ap_timeout_parameter_parse(
    const char *timeout_parameter, apr_interval_time_t *timeout,
    const char *default_time_unit)
{
    char *endp;
    const char *unit;
    apr_int64_t tout, mult;

    errno = 0;
    tout = apr_strtoi64(timeout_parameter, &endp, 10);
    if (errno) {
        return errno;
    }
    unit = (!endp || !*endp) ? default_time_unit : endp;
    if (tout < 0) {
        return APR_EGENERAL;
    }
    switch (*unit) {
    case 's':
        mult = APR_USEC_PER_SEC;
        break;
    case 'h':
        mult = 3600 * APR_USEC_PER_SEC;
        break;
    case 'm':
        if (unit[1] == 's') {
            mult = 1000;
        }
        else if (unit[1] == 'i') {
            mult = 60 * APR_USEC_PER_SEC;
        }
        else {
            return APR_EGENERAL;
        }
        break;
    default:
        return APR_EGENERAL;
    }
    if (tout > APR_INT64_MAX / mult) {
        return APR_EGENERAL;        /* httpd's would overflow */
    }
    *timeout = (apr_interval_time_t)(tout * mult);
    return APR_SUCCESS;
}

/* RateLimitConcurrency's holds, sized in post_config: no harness gets
 * there */
AP_DECLARE(apr_status_t) ap_mpm_query(int query_code, int *result)
{
    (void)query_code; (void)result;
    abort();
}

/* plans=FILE: a path relative to a ServerRoot of /fuzz */
AP_DECLARE(char *) ap_server_root_relative(apr_pool_t *p, const char *fname)
{
    return fname[0] == '/' ? apr_pstrdup(p, fname)
                           : apr_pstrcat(p, "/fuzz/", fname, NULL);
}
