/* record: see record.h. */
#include "record.h"

#include <stdlib.h>
#include <string.h>

const char *lq_record_field(const redisReply *flat, const char *name)
{
    if (!flat || flat->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < flat->elements; i += 2)
        if (flat->element[i]->str && strcmp(flat->element[i]->str, name) == 0)
            return flat->element[i + 1]->str;
    return NULL;
}

int64_t lq_record_field_ll(const redisReply *flat, const char *name)
{
    const char *s = lq_record_field(flat, name);
    return s ? strtoll(s, NULL, 10) : 0;
}

/* The field, or dflt when absent. */
static const char *s_str(const redisReply *flat, const char *name, const char *dflt)
{
    const char *s = lq_record_field(flat, name);
    return s ? s : dflt;
}

void lq_record_batch_info(lq_batch_info_t *info, const char *id, const redisReply *flat)
{
    memset(info, 0, sizeof *info);
    info->id = id;
    info->name = s_str(flat, "name", "");
    info->state = s_str(flat, "state", "unknown");
    info->upstream = s_str(flat, "upstream", "default");
    int64_t closed = lq_record_field_ll(flat, "closed");
    int64_t submitted = lq_record_field_ll(flat, "submitted");
    info->total = closed ? lq_record_field_ll(flat, "total") : submitted;
    info->completed = lq_record_field_ll(flat, "completed");
    info->failed = lq_record_field_ll(flat, "failed");
    info->retried = lq_record_field_ll(flat, "retried");
    info->duplicates = lq_record_field_ll(flat, "duplicates");
    info->inflight = lq_record_field_ll(flat, "leased");
    info->pending = submitted - info->completed - info->failed - info->inflight;
    if (info->pending < 0 || strcmp(info->state, "cancelled") == 0 ||
        strcmp(info->state, "completed") == 0)
        info->pending = 0;
    info->prompt_tokens = lq_record_field_ll(flat, "prompt_tokens");
    info->completion_tokens = lq_record_field_ll(flat, "completion_tokens");
    info->created_at = lq_record_field_ll(flat, "created_at");
    info->finished_at = lq_record_field_ll(flat, "finished_at");
    info->priority = lq_record_field_ll(flat, "priority");
    info->max_attempts = lq_record_field_ll(flat, "max_attempts");
    info->timeout_ms = lq_record_field_ll(flat, "timeout_ms");
    info->cache = lq_record_field_ll(flat, "cache") == 1;
    info->cached = lq_record_field_ll(flat, "cached");
    info->cached_prompt_tokens = lq_record_field_ll(flat, "cached_prompt_tokens");
    info->cached_completion_tokens = lq_record_field_ll(flat, "cached_completion_tokens");
}
