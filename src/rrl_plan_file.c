/* Licensed under the Apache License, Version 2.0 (the "License"); you may
 * not use this file except in compliance with the License.  You may obtain
 * a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
 */

/*
 * plans=FILE: a plans file's table in shared memory.
 *
 * Why shared memory built by the parent and rebuilt by a child: the file
 * may hold 100,000 lines, which every child must see at once and the same,
 * and a child must not hold a copy of its own.  The parent reads the file
 * in post_config (at startup and every graceful restart) into a hash table
 * in a segment sized for twice the plans it then holds; the first child
 * that sees the file changed (each looks at most once a second) reads it
 * into the table not in force and makes that one the one in force.
 * Readers take no lock: each table has a sequence number, odd while it is
 * written, which a reader checks before and after its look.  A changed
 * file that does not parse, or outgrows the segment, is refused whole with
 * its line logged; the plans read before stay in force.
 */

#include "apr_atomic.h"
#include "apr_file_io.h"
#include "apr_general.h"
#include "apr_hash.h"
#include "apr_shm.h"
#include "apr_strings.h"

#include <string.h>

#include "rrl_private.h"
#include "rrl_plan_file.h"
#include "rrl_counters.h"
#include "rrl_key.h"
#include "rrl_limit.h"
#include "rrl_util.h"

#define RRL_PLAN_MIN_CAPACITY 1024   /* plans a table has room for at least */

/* One plan of the file: its value's keyed hash, and its numbers */
typedef struct {
    apr_uint64_t h;               /* 0: a free slot */
    apr_int64_t count;            /* of its RATE; 0: off */
    apr_int64_t burst;            /* 0: not given */
    apr_uint32_t period;          /* of its RATE, in seconds */
    apr_uint32_t line;            /* of the file */
} rrl_plan_entry_t;

/* A table being filled: nslots slots, linear probing, at most capacity
 * (half of them) used */
typedef struct {
    rrl_plan_entry_t *slots;
    apr_uint32_t nslots, capacity, used;
} rrl_plan_tab_t;

/* What the file was when last read, in force or refused */
typedef struct {
    apr_int64_t mtime, size;      /* size -1: it could not be read */
    apr_uint64_t inode;
} rrl_plan_sig_t;

/* The shared segment of one file: two tables, one in force */
typedef struct {
    apr_uint32_t magic;
    rrl_lock_t lock;              /* of the child reading the file again */
    volatile apr_uint32_t active; /* the table in force: 0 or 1 */
    volatile apr_uint32_t seq[2]; /* each table's: odd while it is written */
    apr_uint32_t entries[2];
    apr_uint32_t nslots, capacity;
    rrl_plan_sig_t sig;           /* under lock */
    unsigned char salt[16];       /* of the values' hashes */
    rrl_plan_entry_t slots[1];    /* 2 * nslots */
} rrl_plan_shm_t;

/* A plans file, one per path, shared by the limits that name it */
struct rrl_plan_file {
    const char *path;
    apr_array_header_t *limits;   /* rrl_limit_t *: those that use it */
    apr_uint32_t plans;           /* as check_config read them */
    unsigned char salt[16];
    rrl_plan_shm_t *t;            /* made in post_config */
    volatile apr_uint32_t checked;    /* this child's last look (s) */
};

/* Written in check_config and post_config only */
static apr_array_header_t *rrl_plan_files;    /* rrl_plan_file_t * */

static apr_uint64_t rrl_plan_hash(const unsigned char *salt, const char *v,
                                  apr_size_t len)
{
    apr_uint64_t h[2];

    rrl_util_siphash128(salt, v, len, h);
    return h[0] ? h[0] : 1;
}

static const char *rrl_plan_tab_put(apr_pool_t *p, rrl_plan_tab_t *tab,
                                    const rrl_plan_entry_t *e)
{
    apr_uint32_t i = (apr_uint32_t)(e->h % tab->nslots);

    if (tab->used >= tab->capacity) {
        return apr_psprintf(p, "more than %u plans, the room made for them "
                            "when the server last (re)started; restart it "
                            "gracefully to make room", tab->capacity);
    }
    while (tab->slots[i].h) {
        if (tab->slots[i].h == e->h) {
            return apr_psprintf(p, "its value is given on line %u already",
                                tab->slots[i].line);
        }
        i = (i + 1) % tab->nslots;
    }
    tab->slots[i] = *e;
    tab->used++;
    return NULL;
}

/*
 * One line: "VALUE RATE [burst=N]", "VALUE off", blank, or a comment (from
 * a # that starts a word); the plan checked against every limit that uses
 * the file, the value taken as the limits' keys take it (hashed when long)
 * and put in tab.  Messages never show the value: it may be an API key.
 */
static const char *rrl_plan_file_line(apr_pool_t *p, apr_pool_t *lp,
                                      const rrl_plan_file_t *f,
                                      const unsigned char *salt, char *s,
                                      apr_size_t len, rrl_plan_tab_t *tab,
                                      unsigned line)
{
    rrl_plan_entry_t e;
    rrl_algo_plan_t pl;
    const char *err, *v;
    char *c;
    apr_size_t vl;
    int i;

    if (memchr(s, '\0', len)) {
        return "a NUL byte; expected text";
    }
    for (c = s; *c; c++) {
        if (*c == '#' && (c == s || c[-1] == ' ' || c[-1] == '\t')) {
            break;
        }
    }
    while (c > s && (c[-1] == ' ' || c[-1] == '\t' || c[-1] == '\r')) {
        c--;
    }
    *c = '\0';
    s += strspn(s, " \t");
    if (!*s) {
        return NULL;
    }
    vl = strcspn(s, " \t");
    if (!s[vl]) {
        return "a value without a plan; expected VALUE RATE [burst=N] or "
               "VALUE off";
    }
    s[vl] = '\0';
    if ((err = rrl_algo_parse_plan(lp, s + vl + 1, &pl)) != NULL) {
        return apr_pstrdup(p, err);
    }
    for (i = 0; !pl.off && i < f->limits->nelts; i++) {
        const rrl_limit_t *l = APR_ARRAY_IDX(f->limits, i, rrl_limit_t *);
        rrl_params_t rp;

        if ((err = rrl_algo_plan_params(lp, &pl, &l->p, l->cost, &rp))) {
            return apr_psprintf(p, "%s, for RateLimit name=%s (%s:%u)", err,
                                l->name, l->file, l->line);
        }
    }
    v = rrl_key_value(lp, s, vl);
    memset(&e, 0, sizeof(e));
    e.h = rrl_plan_hash(salt, v, strlen(v));
    e.count = pl.off ? 0 : pl.count;
    e.burst = pl.burst;
    e.period = (apr_uint32_t)(pl.period / RRL_USEC_PER_SEC);
    e.line = line;
    return rrl_plan_tab_put(p, tab, &e);
}

/* The file into memory, NUL-terminated, and what it is; *lines: how many
 * it has at most */
static const char *rrl_plan_file_slurp(apr_pool_t *p, const char *path,
                                       char **data, apr_size_t *len,
                                       apr_uint32_t *lines,
                                       rrl_plan_sig_t *sig)
{
    apr_file_t *fd;
    apr_finfo_t fi;
    apr_status_t rv;
    const char *c;

    if ((rv = apr_file_open(&fd, path, APR_FOPEN_READ | APR_FOPEN_BINARY,
                            APR_OS_DEFAULT, p)) != APR_SUCCESS
        || ((rv = apr_file_info_get(&fi, APR_FINFO_MTIME | APR_FINFO_SIZE
                                    | APR_FINFO_INODE, fd)) != APR_SUCCESS
            && !APR_STATUS_IS_INCOMPLETE(rv))) {
        return apr_psprintf(p, "cannot be read (%pm)", &rv);
    }
    *data = apr_palloc(p, (apr_size_t)fi.size + 1);
    rv = apr_file_read_full(fd, *data, (apr_size_t)fi.size, len);
    apr_file_close(fd);
    if (rv != APR_SUCCESS && rv != APR_EOF) {
        return apr_psprintf(p, "cannot be read (%pm)", &rv);
    }
    (*data)[*len] = '\0';
    for (*lines = 1, c = *data; (c = memchr(c, '\n', *data + *len - c));
         c++) {
        ++*lines;
    }
    sig->mtime = fi.mtime;
    sig->size = fi.size;
    sig->inode = (apr_uint64_t)fi.inode;
    return NULL;
}

/* Every line of data into tab, or the first error and its line */
static const char *rrl_plan_file_parse(apr_pool_t *p,
                                       const rrl_plan_file_t *f,
                                       const unsigned char *salt,
                                       char *data, apr_size_t len,
                                       rrl_plan_tab_t *tab, unsigned *line)
{
    char *s = data, *end = data + len, *nl;
    const char *err = NULL;
    apr_pool_t *lp;

    apr_pool_create(&lp, p);
    for (*line = 1; s < end; ++*line, s = nl + 1) {
        if (!(nl = memchr(s, '\n', end - s))) {
            nl = end;
        }
        *nl = '\0';
        err = rrl_plan_file_line(p, lp, f, salt, s, nl - s, tab, *line);
        apr_pool_clear(lp);
        if (err) {
            break;
        }
    }
    apr_pool_destroy(lp);
    return err;
}

/* Read f into tab (slots zeroed by the caller); its version into *sig.
 * Errors: "PATH: WHY" or "PATH:LINE: WHY" */
static const char *rrl_plan_file_read(apr_pool_t *p, const rrl_plan_file_t *f,
                                      const unsigned char *salt,
                                      rrl_plan_tab_t *tab, rrl_plan_sig_t *sig)
{
    char *data = NULL;
    apr_size_t len = 0;
    apr_uint32_t lines = 0;
    unsigned line = 0;
    const char *err;

    if ((err = rrl_plan_file_slurp(p, f->path, &data, &len, &lines, sig))) {
        return apr_psprintf(p, "%s: %s", f->path, err);
    }
    if (!tab->slots) {            /* room for every line */
        tab->capacity = lines;
        tab->nslots = 2 * lines + 1;
        tab->slots = apr_pcalloc(p, sizeof(*tab->slots) * tab->nslots);
    }
    if ((err = rrl_plan_file_parse(p, f, salt, data, len, tab, &line))) {
        return apr_psprintf(p, "%s:%u: %s", f->path, line, err);
    }
    return NULL;
}

/*
 * check_config (apachectl -t too): each plans file read and checked
 * against every limit that uses it.  One bad line stops the server.
 */
int rrl_plan_file_check_config(apr_pool_t *pconf, apr_pool_t *ptemp)
{
    const apr_array_header_t *all = rrl_limit_all();
    apr_hash_t *seen = apr_hash_make(ptemp);
    rrl_plan_sig_t sig;
    int i, bad = 0;

    rrl_plan_files = apr_array_make(pconf, 2, sizeof(rrl_plan_file_t *));
    for (i = 0; all && i < all->nelts; i++) {
        rrl_limit_t *l = APR_ARRAY_IDX(all, i, rrl_limit_t *);
        rrl_plan_file_t *f;

        if (l->plans != RRL_PLANS_FILE) {
            continue;
        }
        if (!(f = apr_hash_get(seen, l->plans_path, APR_HASH_KEY_STRING))) {
            f = apr_pcalloc(pconf, sizeof(*f));
            f->path = l->plans_path;
            f->limits = apr_array_make(pconf, 2, sizeof(rrl_limit_t *));
            if (apr_generate_random_bytes(f->salt, sizeof(f->salt))
                != APR_SUCCESS) {
                memset(f->salt, 0x5a, sizeof(f->salt));
            }
            apr_hash_set(seen, f->path, APR_HASH_KEY_STRING, f);
            APR_ARRAY_PUSH(rrl_plan_files, rrl_plan_file_t *) = f;
        }
        APR_ARRAY_PUSH(f->limits, rrl_limit_t *) = l;
        l->plan_file = f;
    }
    for (i = 0; i < rrl_plan_files->nelts; i++) {
        rrl_plan_file_t *f = APR_ARRAY_IDX(rrl_plan_files, i,
                                           rrl_plan_file_t *);
        const rrl_limit_t *l = APR_ARRAY_IDX(f->limits, 0, rrl_limit_t *);
        rrl_plan_tab_t tab = { NULL, 0, 0, 0 };
        const char *err = rrl_plan_file_read(ptemp, f, f->salt, &tab, &sig);

        if (err) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_CRIT, 0, NULL,
                         RRL_LOGNO(00061) "%s (plans= of RateLimit name=%s "
                         "at %s:%u); a plans file has a line per key: VALUE "
                         "RATE [burst=N] or VALUE off, # comments", err,
                         l->name, l->file, l->line);
            bad = 1;
        }
        f->plans = tab.used;
    }
    return bad ? !OK : OK;
}

/* Each file's segment, sized for twice its plans, and its first table */
apr_status_t rrl_plan_file_post_config(apr_pool_t *pconf, apr_pool_t *ptemp,
                                       server_rec *s)
{
    int i;

    for (i = 0; rrl_plan_files && i < rrl_plan_files->nelts; i++) {
        rrl_plan_file_t *f = APR_ARRAY_IDX(rrl_plan_files, i,
                                           rrl_plan_file_t *);
        apr_uint32_t cap = f->plans > RRL_PLAN_MIN_CAPACITY / 2
                           ? 2 * f->plans : RRL_PLAN_MIN_CAPACITY;
        apr_size_t size = APR_OFFSETOF(rrl_plan_shm_t, slots)
                          + sizeof(rrl_plan_entry_t) * 4 * (apr_size_t)cap;
        rrl_plan_tab_t tab;
        rrl_plan_shm_t *t;
        apr_shm_t *shm;
        apr_status_t rv;
        const char *err;

        if ((rv = apr_shm_create(&shm, size, NULL, pconf)) != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00065)
                         "cannot create %" APR_SIZE_T_FMT " bytes of shared "
                         "memory for the plans of %s", size, f->path);
            return rv;
        }
        t = apr_shm_baseaddr_get(shm);
        memset(t, 0, size);
        if ((rv = rrl_util_lock_init(&t->lock)) != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RRL_LOGNO(00066)
                         "cannot create the lock of the plans of %s",
                         f->path);
            return rv;
        }
        t->capacity = cap;
        t->nslots = 2 * cap;
        memcpy(t->salt, f->salt, sizeof(t->salt));
        tab.slots = t->slots;
        tab.nslots = t->nslots;
        tab.capacity = t->capacity;
        tab.used = 0;
        if ((err = rrl_plan_file_read(ptemp, f, t->salt, &tab, &t->sig))) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RRL_LOGNO(00064)
                         "%s; httpd does not start", err);
            return APR_EGENERAL;
        }
        t->entries[0] = tab.used;
        t->magic = RRL_SHM_MAGIC;
        f->t = t;
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, RRL_LOGNO(00068)
                     "plans file %s: %u plans, room for %u (%" APR_SIZE_T_FMT
                     " bytes of shared memory)", f->path, tab.used, cap,
                     size);
    }
    return APR_SUCCESS;
}

/* Refused or in force, the file is what it was when last read */
static int rrl_plan_sig_same(const rrl_plan_sig_t *a, const rrl_plan_sig_t *b)
{
    return a->mtime == b->mtime && a->size == b->size
           && a->inode == b->inode;
}

/* A refused file counts as a plan error of each limit that uses it */
static void rrl_plan_file_errors(const rrl_plan_file_t *f)
{
    int i;

    for (i = 0; i < f->limits->nelts; i++) {
        rrl_limit_stat_t *st = APR_ARRAY_IDX(f->limits, i,
                                             rrl_limit_t *)->stat;

        if (st) {
            apr_atomic_inc64(&st->plan_errors);
        }
    }
}

/* The file changed (t->lock held): read it into the table not in force,
 * and put that one in force; or refuse it, logged once per version */
static void rrl_plan_file_reload(request_rec *r, rrl_plan_file_t *f,
                                 rrl_plan_shm_t *t, rrl_plan_sig_t *sig)
{
    apr_uint32_t b = 1 - apr_atomic_read32(&t->active);
    apr_uint32_t seq = apr_atomic_read32(&t->seq[b]) | 1;
    rrl_plan_tab_t tab;
    const char *err;
    apr_pool_t *p;

    apr_pool_create(&p, r->pool);
    apr_atomic_set32(&t->seq[b], seq);          /* odd: being written */
    tab.slots = &t->slots[(apr_size_t)b * t->nslots];
    tab.nslots = t->nslots;
    tab.capacity = t->capacity;
    tab.used = 0;
    memset(tab.slots, 0, sizeof(*tab.slots) * t->nslots);
    err = rrl_plan_file_read(p, f, t->salt, &tab, sig);
    apr_atomic_set32(&t->seq[b], seq + 1);
    t->sig = *sig;
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, r->server, RRL_LOGNO(00062)
                     "%s; the plans read before stay in force until the "
                     "file is fixed", err);
        rrl_plan_file_errors(f);
    }
    else {
        t->entries[b] = tab.used;
        apr_atomic_set32(&t->active, b);
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, r->server, RRL_LOGNO(00063)
                     "plans file %s read again: %u plans in force",
                     f->path, tab.used);
    }
    apr_pool_destroy(p);
}

/* Has f changed?  Looked at no more than once a second by each child; the
 * first child to see a change reads it (a child already reading it is
 * left alone: nothing here waits) */
void rrl_plan_file_refresh(request_rec *r, rrl_plan_file_t *f)
{
    apr_uint32_t sec = (apr_uint32_t)apr_time_sec(apr_time_now());
    apr_uint32_t last = apr_atomic_read32(&f->checked);
    rrl_plan_shm_t *t = f->t;
    rrl_plan_sig_t sig = { 0, -1, 0 };
    apr_finfo_t fi;
    apr_status_t rv;

    if (!t || last == sec
        || apr_atomic_cas32(&f->checked, sec, last) != last) {
        return;
    }
    rv = apr_stat(&fi, f->path, APR_FINFO_MTIME | APR_FINFO_SIZE
                  | APR_FINFO_INODE, r->pool);
    if (rv == APR_SUCCESS || APR_STATUS_IS_INCOMPLETE(rv)) {
        sig.mtime = fi.mtime;
        sig.size = fi.size;
        sig.inode = (apr_uint64_t)fi.inode;
    }
    if (rrl_plan_sig_same(&sig, &t->sig)
        || rrl_util_trylock(&t->lock) != APR_SUCCESS) {
        return;
    }
    if (!rrl_plan_sig_same(&sig, &t->sig)) {
        rrl_plan_file_reload(r, f, t, &sig);
    }
    rrl_util_unlock(&t->lock);
}

/* The plan of a key value (as its store key has it) in f: 1 and *pl, or
 * 0 when it has none.  No lock: a table rewritten during the look (two
 * changes of the file within it) is looked at again */
int rrl_plan_file_lookup(rrl_plan_file_t *f, const char *value,
                         apr_size_t len, rrl_algo_plan_t *pl)
{
    rrl_plan_shm_t *t = f->t;
    apr_uint64_t h;
    int tries;

    if (!t) {
        return 0;
    }
    h = rrl_plan_hash(t->salt, value, len);
    for (tries = 0; tries < 4; tries++) {
        apr_uint32_t a = apr_atomic_read32(&t->active);
        apr_uint32_t seq = apr_atomic_read32(&t->seq[a]), i, k;
        const rrl_plan_entry_t *slots = &t->slots[(apr_size_t)a * t->nslots];
        rrl_plan_entry_t e = { 0, 0, 0, 0, 0 };

        if (seq & 1) {
            continue;
        }
        for (i = (apr_uint32_t)(h % t->nslots), k = 0; k < t->nslots;
             i = (i + 1) % t->nslots, k++) {
            e = slots[i];
            if (!e.h || e.h == h) {
                break;
            }
        }
        __sync_synchronize();
        if (apr_atomic_read32(&t->seq[a]) != seq) {
            continue;
        }
        if (e.h != h) {
            return 0;
        }
        memset(pl, 0, sizeof(*pl));
        pl->off = e.count == 0;
        pl->count = e.count;
        pl->period = (apr_int64_t)e.period * RRL_USEC_PER_SEC;
        pl->burst = e.burst;
        return 1;
    }
    return 0;
}

const char *rrl_plan_file_path(const rrl_plan_file_t *f)
{
    return f->path;
}

void rrl_plan_file_stats(const rrl_plan_file_t *f, rrl_plan_file_stats_t *st)
{
    const rrl_plan_shm_t *t = f->t;

    memset(st, 0, sizeof(*st));
    if (t) {
        st->entries = t->entries[apr_atomic_read32(
            (volatile apr_uint32_t *)&t->active)];
        st->capacity = t->capacity;
    }
}
