// What the C tests share: a check that reports the shim's last error and ends the test, and
// loading the target + drafter pair named on the command line.
#pragma once

#include <stdio.h>
#include <stdlib.h>

#include "llama_mtp.h"

#define CHECK(cond)                                                                                               \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, __LINE__, #cond, llama_mtp_last_error()); \
            exit(1);                                                                                              \
        }                                                                                                         \
    } while (0)

static inline void load_pair(const char * target_path, const char * drafter_path, struct llama_model ** target,
                             struct llama_model ** drafter) {
    llama_mtp_init(1);
    struct llama_mtp_model_params mp = llama_mtp_model_default_params();
    CHECK(llama_mtp_model_load(target_path, mp, target) == LLAMA_MTP_OK);
    CHECK(llama_mtp_model_load(drafter_path, mp, drafter) == LLAMA_MTP_OK);
}
