/* libFuzzer target for the --rerun-failed state file (filter.c,
 * rerun_parse): any bytes give either NULL or an array, which the runner
 * then searches for paths and writes back. */
#include <stdint.h>
#include <stdlib.h>

#include "host/filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *failed = rerun_parse((const char *)data, size);
    if (!failed)
        return 0;
    if (!json_is_array(failed))
        abort();
    /* what rerun_state_update writes back must be JSON that parses again */
    json_t *doc = json_pack("{s:O}", "failed", failed);
    char *text = json_dumps(doc, JSON_INDENT(1));
    if (!text)
        abort();
    json_t *again = rerun_parse(text, strlen(text));
    if (!again || json_array_size(again) != json_array_size(failed))
        abort();
    json_decref(again);
    free(text);
    json_decref(doc);
    json_decref(failed);
    return 0;
}
