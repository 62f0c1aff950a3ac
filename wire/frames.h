/* frames: receiving one whole ZeroMQ multipart message, the loop over
 * ZMQ_RCVMORE that the message socket (zsock.c) and the ZAP handler
 * (curve.c) share. The caller owns the lq_frames_t value and the frames it
 * holds until lq_frames_clear(). Knows no llmq framing. */
#ifndef LQ_FRAMES_H
#define LQ_FRAMES_H

#include <zmq.h>

/* Frames kept per message; later ones are read and discarded. */
#define LQ_FRAMES_MAX 8

typedef struct {
    zmq_msg_t part[LQ_FRAMES_MAX]; /* the first `kept` frames, open */
    int kept;                      /* frames held in part[] */
    int total;                     /* frames received, kept or not */
    int truncated;                 /* a frame after the first failed to arrive */
} lq_frames_t;

/* Receives one multipart message from sock: the first frame without
 * blocking, the rest as ZeroMQ delivers a message whole. Returns 1 when a
 * message was read (f->truncated set if it broke off; its frames are still
 * to be cleared), 0 when none is pending (f holds nothing). */
int lq_frames_recv(lq_frames_t *f, void *sock);

/* Closes the frames f holds and empties it. Can't fail. */
void lq_frames_clear(lq_frames_t *f);

#endif
