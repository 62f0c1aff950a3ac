/* record: reads the broker's Redis records (a batch's meta hash as the
 * flat field/value array of HGETALL, or of the LIST script) into the
 * protocol's structs. Pure functions; the strings returned point into the
 * reply and live as long as it does. */
#ifndef LQ_RECORD_H
#define LQ_RECORD_H

#include "../proto/msg.h"

#include <hiredis/hiredis.h>
#include <stdint.h>

/* The value of field name in a flat array, or NULL. */
const char *lq_record_field(const redisReply *flat, const char *name);
/* The same as a decimal integer; 0 when absent or not a number. */
int64_t lq_record_field_ll(const redisReply *flat, const char *name);

/* Fills info for batch id from its meta hash. Can't fail. */
void lq_record_batch_info(lq_batch_info_t *info, const char *id, const redisReply *flat);

#endif
