/* Shared by the libFuzzer harnesses of t/fuzz/ and stubs.c */
#ifndef RRL_FUZZ_H
#define RRL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* What the ap_expr stand-in gives for a key= expression (stubs.c) */
extern const char *rrl_fuzz_expr_value;
extern int rrl_fuzz_expr_fail;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant that does not hold: report it as a crash, with the line */
#define RRL_FUZZ_ASSERT(c) \
    do { \
        if (!(c)) { \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
                    __LINE__, #c); \
            abort(); \
        } \
    } while (0)

/* The harness's root pool, made once by LLVMFuzzerInitialize */
#define RRL_FUZZ_ROOT_POOL(pool) \
    static apr_pool_t *pool; \
    int LLVMFuzzerInitialize(int *argc, char ***argv) \
    { \
        (void)argc; \
        (void)argv; \
        apr_initialize(); \
        apr_pool_create(&pool, NULL); \
        return 0; \
    }

#endif
