/* libFuzzer target for the coverage report's reading of an event stream
 * (coverage.c): the input is the whole stream, as `provium coverage --from`
 * reads a file someone handed it. Any input must end in a report or a clean
 * error, never a crash or a leak; a report never carries a control byte to
 * the terminal, and no name in it opens a tag of the HTML page. */
#include <stdint.h>
#include <stdlib.h>

#include "feed.h"
#include "host/coverage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_feed f;
    fuzz_feed_start(&f, data, size);
    struct cov_report r = {0};
    struct pv_err err = {0};
    int rc = cov_read_fd(&r, f.host, &err);
    close(f.host);
    fuzz_feed_join(&f);
    if (rc < 0 && !err.msg[0])
        abort();
    cov_finish(&r);
    struct buf text = BUF_INIT, html = BUF_INIT;
    cov_text(&r, &text);
    cov_html(&r, "fuzz", &html);
    if (memchr(text.data, 0x1b, text.len) || memchr(html.data, 0x1b, html.len))
        abort();
    /* the page's own markup has none of these tags: any would be a name's */
    if (strstr(html.data, "<script") || strstr(html.data, "<img") || strstr(html.data, "<x"))
        abort();
    buf_release(&text);
    buf_release(&html);
    cov_release(&r);
    return 0;
}
