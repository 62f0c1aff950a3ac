/* payload: the two string formats the broker writes into Redis and the Lua
 * scripts read back, each with its one encoder and one decoder here.
 *
 *   job payload   "<n>:<custom_id><m>:<url><est_tokens>:<body>"
 *                 (n, m: byte lengths in decimal; est_tokens decimal; the
 *                 body runs to the end and may hold any byte)
 *   lease member  "<batch>|<index>"   (a batch id never holds '|')
 *
 * LQ_PAYLOAD_LUA is the Lua side of the same formats (cid_of, member_of,
 * split_member); scripts.c prepends it to the scripts that read them and
 * tests/unit/test_payload.c checks that both sides agree on a real Redis. */
#ifndef LQ_PAYLOAD_H
#define LQ_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

/* Big enough for any member: a batch id (LQ_MAX_ID) + '|' + an int64. */
#define LQ_MEMBER_MAX 160

/* A decoded payload: views into the encoded bytes (not NUL-terminated). */
typedef struct {
    const char *cid;
    size_t cid_len;
    const char *url;
    size_t url_len;
    int64_t est_tokens;
    const char *body;
    size_t body_len;
} lq_payload_t;

/* Encodes a job payload into a new heap buffer of *len bytes (also
 * NUL-terminated for convenience). Caller frees. Can't fail. */
char *lq_payload_encode(const char *cid, const char *url, int64_t est_tokens, const char *body,
                        size_t body_len, size_t *len);

/* Decodes p[0..len). Returns 0 and fills out (views into p), or -1 when the
 * bytes are not a well-formed payload. */
int lq_payload_decode(const char *p, size_t len, lq_payload_t *out);

/* Writes the lease member of (batch, index) into buf. Returns its length,
 * or -1 if it does not fit. */
int lq_member_format(char *buf, size_t size, const char *batch, int64_t index);

/* Splits a member into its batch id (copied into batch, NUL-terminated) and
 * index. Returns 0, or -1 when member is malformed or the id does not fit. */
int lq_member_parse(const char *member, char *batch, size_t size, int64_t *index);

/* Lua definitions of cid_of(payload), member_of(id, idx) and
 * split_member(member) -> id, idx (nil when malformed). */
#define LQ_PAYLOAD_LUA                                                                             \
    "local function cid_of(payload)\n"                                                             \
    "  local c = string.find(payload, ':', 1, true)\n"                                             \
    "  if not c then return '' end\n"                                                              \
    "  local n = tonumber(string.sub(payload, 1, c - 1)) or 0\n"                                   \
    "  return string.sub(payload, c + 1, c + n)\n"                                                 \
    "end\n"                                                                                        \
    "local function member_of(id, idx)\n"                                                          \
    "  return id..'|'..idx\n"                                                                      \
    "end\n"                                                                                        \
    "local function split_member(member)\n"                                                        \
    "  local bar = string.find(member, '|', 1, true)\n"                                            \
    "  if not bar then return nil end\n"                                                           \
    "  return string.sub(member, 1, bar - 1), string.sub(member, bar + 1)\n"                       \
    "end\n"

#endif
