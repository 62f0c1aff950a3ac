/* msg: placeholder until the codec lands; see msg.h. */
#include "msg.h"
