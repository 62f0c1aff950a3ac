/* frames: see frames.h. */
#include "frames.h"

int lq_frames_recv(lq_frames_t *f, void *sock)
{
    f->kept = f->total = f->truncated = 0;
    for (int more = 1; more;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, f->total == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&part);
            if (f->total == 0)
                return 0;
            f->truncated = 1;
            break;
        }
        more = zmq_msg_more(&part);
        if (f->kept < LQ_FRAMES_MAX)
            f->part[f->kept++] = part;
        else
            zmq_msg_close(&part);
        f->total++;
    }
    return 1;
}

void lq_frames_clear(lq_frames_t *f)
{
    for (int i = 0; i < f->kept; i++)
        zmq_msg_close(&f->part[i]);
    f->kept = f->total = f->truncated = 0;
}
