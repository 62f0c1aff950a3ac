/* scripts: the Lua scripts that make every broker state change in Redis one
 * atomic, idempotent step. The key layout is documented in
 * docs/architecture.md; every script takes the key prefix as ARGV[1]. */
#ifndef LQ_SCRIPTS_H
#define LQ_SCRIPTS_H

enum {
    LQ_SCRIPT_OPEN,
    LQ_SCRIPT_CHUNK,
    LQ_SCRIPT_CLOSE,
    LQ_SCRIPT_LEASE,
    LQ_SCRIPT_REPORT,
    LQ_SCRIPT_REQUEUE,
    LQ_SCRIPT_EXPIRE,
    LQ_SCRIPT_PROMOTE,
    LQ_SCRIPT_CANCEL,
    LQ_SCRIPT_LIST,
    LQ_SCRIPT_RESULTS,
    LQ_SCRIPT_DELETE,
    LQ_SCRIPT_SWEEP,
    LQ_SCRIPT_CACHE_SCAN,
    LQ_SCRIPT_STATS,
    LQ_SCRIPT_ACTIVE,
    LQ_SCRIPT_RLSHARE,
    LQ_SCRIPT_COUNT
};

/* NULL-terminated array of LQ_SCRIPT_COUNT Lua sources, indexed as above. */
extern const char *const lq_scripts[];

/* Number of fields per result in a REPORT call (after prefix, now and the
 * cache TTL). */
#define LQ_REPORT_FIELDS 6

/* Number of arguments per upstream in an RLSHARE call (after prefix, broker
 * id and staleness), and of values per upstream in its answer (followed by
 * Redis's time, then name/state pairs of the upstreams not asked about). */
#define LQ_RLSHARE_ARGS 4
#define LQ_RLSHARE_OUT 3

#endif
