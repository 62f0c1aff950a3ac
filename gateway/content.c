/* content: the output and error files of a batch, streamed from the
 * broker. The reply is chunked (its size is not known in advance); MHD asks
 * for more bytes as the client reads, and each time the page of results
 * in hand is used up the next one (LQ_GW_PAGE results) is fetched from the
 * broker with RESULTS. Memory: one page, whatever the batch's size. Lines
 * come in input order, the failed ones to the error file, the others to
 * the output file. */
#include "gateway.h"

#include "common/log.h"
#include "common/util.h"

#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LQ_GW_PAGE 1000
#define LQ_GW_MAX_STALLS 100

typedef struct {
    lq_gw_t *gw;
    char batch[LQ_MAX_ID + 1];
    int want_failed;
    int64_t from;
    lq_msg_t page;
    int have_page, done, stalls;
    size_t item, off;
} s_reader_t;

/* Fetches the next page of results. Returns 0, or -1 if the broker did not
 * answer or refused. */
static int s_fetch(s_reader_t *c)
{
    if (c->have_page)
        lq_msg_clear(&c->page);
    c->have_page = 0;
    c->item = c->off = 0;
    lq_msg_t m = {0};
    m.cmd = LQ_C_RESULTS;
    m.u.results.batch = c->batch;
    m.u.results.from = c->from;
    m.u.results.max = LQ_GW_PAGE;
    if (!lq_gw_call(c->gw, &m, &c->page))
        return -1;
    if (c->page.cmd != LQ_C_RESULTS_PAGE) {
        LQ_WARN("results of %s: %s", c->batch,
                c->page.cmd == LQ_C_ERROR ? c->page.u.error.message : "unexpected reply");
        lq_msg_clear(&c->page);
        return -1;
    }
    c->have_page = 1;
    int progressed = c->page.u.results_page.next > c->from;
    c->from = c->page.u.results_page.next;
    c->done = c->page.u.results_page.done;
    if (!progressed && !c->done) {
        if (++c->stalls > LQ_GW_MAX_STALLS)
            return -1;
        usleep(100000);
    }
    return 0;
}

/* MHD's content reader: copies result lines (each with its LF) into buf. */
static ssize_t s_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    s_reader_t *c = cls;
    size_t n = 0;
    while (n < max) {
        lq_c_results_page_t *p = &c->page.u.results_page;
        if (c->have_page && c->item < p->nitems) {
            lq_result_item_t *it = &p->items[c->item];
            if ((it->failed != 0) != c->want_failed) {
                c->item++;
            } else if (c->off < it->line_len) {
                size_t k = it->line_len - c->off < max - n ? it->line_len - c->off : max - n;
                memcpy(buf + n, it->line + c->off, k);
                n += k;
                c->off += k;
            } else {
                buf[n++] = '\n';
                c->off = 0;
                c->item++;
            }
            continue;
        }
        if (n > 0)
            break;
        if (c->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (s_fetch(c) < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    return (ssize_t)n;
}

/* MHD's free callback of the reader: the page in hand and the reader. */
static void s_free(void *cls)
{
    s_reader_t *c = cls;
    if (c->have_page)
        lq_msg_clear(&c->page);
    free(c);
}

int lq_content_reply(lq_gw_req_t *r, const char *broker_batch, int want_failed)
{
    s_reader_t *c = xcalloc(1, sizeof *c);
    c->gw = r->gw;
    snprintf(c->batch, sizeof c->batch, "%s", broker_batch);
    c->want_failed = want_failed;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, s_read, c, s_free);
    if (!resp) {
        s_free(c);
        return MHD_NO;
    }
    return lq_gw_reply_octets(r, resp);
}
