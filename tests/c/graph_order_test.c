// Where Gemma 4's KV cache writes sit in the decode graph (patch 0046), run by ci/sanitize.sh:
//   graph_order_test TARGET.gguf
// ggml-cuda fuses a cache write into the kernel of the node it stores (RMS_NORM + VIEW + SET_ROWS
// for V, ... ROPE + VIEW + SET_ROWS for K) only when the three nodes are adjacent. CI has no GPU,
// so this checks the order itself: every SET_ROWS of a one-token decode (flash attention on, so
// V is stored untransposed) comes right after a VIEW of the node before it, and that node is V's
// norm or K's rope. Likewise every multiply by one value (a layer's output scale) ends an
// adjacent RMS_NORM + MUL + ADD + MUL chain, which ggml-cuda runs as one kernel (patch 0047).
// The graph's nodes are read in order through the scheduler's eval callback; they stay valid
// until the context builds its next graph.
#include <stdio.h>

#include "ggml.h"
#include "llama.h"

#define MAX_NODES 16384

struct graph_record {
    int                        n_nodes;
    const struct ggml_tensor * nodes[MAX_NODES];
};

// asked for every node in graph order; answering false computes nothing apart
static bool record_node(struct ggml_tensor * t, bool ask, void * user_data) {
    struct graph_record * rec = (struct graph_record *)user_data;
    if (ask && rec->n_nodes < MAX_NODES) {
        rec->nodes[rec->n_nodes++] = t;
    }
    return false;
}

static enum ggml_op op_at(const struct graph_record * rec, int i) {
    return rec->nodes[i]->op;
}

// node i's first source is node i - 1
static bool first_source_is_previous(const struct graph_record * rec, int i) {
    return rec->nodes[i]->src[0] == rec->nodes[i - 1];
}

int main(int argc, char ** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s TARGET.gguf\n", argv[0]);
        return 2;
    }
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers              = 0;
    struct llama_model * model   = llama_model_load_from_file(argv[1], mp);
    if (model == NULL) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }

    static struct graph_record  rec;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx                       = 256;
    cp.n_batch                     = 256;
    cp.flash_attn_type             = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.cb_eval                     = record_node;
    cp.cb_eval_user_data           = &rec;
    struct llama_context * ctx     = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }

    llama_token prompt[] = {2, 40, 41};
    if (llama_decode(ctx, llama_batch_get_one(prompt, 3)) != 0) {
        fprintf(stderr, "prompt decode failed\n");
        return 1;
    }
    // the one-token decode's graph only
    rec.n_nodes       = 0;
    llama_token token = 42;
    if (llama_decode(ctx, llama_batch_get_one(&token, 1)) != 0) {
        fprintf(stderr, "decode failed\n");
        return 1;
    }
    if (rec.n_nodes == 0 || rec.n_nodes >= MAX_NODES) {
        fprintf(stderr, "recorded %d nodes\n", rec.n_nodes);
        return 1;
    }

    int n_set_rows = 0, n_after_norm = 0, n_after_rope = 0, n_failed = 0;
    for (int i = 0; i < rec.n_nodes; i++) {
        if (op_at(&rec, i) != GGML_OP_SET_ROWS) {
            continue;
        }
        n_set_rows++;
        const bool view_before = i >= 2 && op_at(&rec, i - 1) == GGML_OP_VIEW && first_source_is_previous(&rec, i) &&
                                 first_source_is_previous(&rec, i - 1);
        const enum ggml_op stored = i >= 2 ? op_at(&rec, i - 2) : GGML_OP_NONE;
        if (view_before && stored == GGML_OP_RMS_NORM) {
            n_after_norm++;
        } else if (view_before && stored == GGML_OP_ROPE) {
            n_after_rope++;
        } else {
            n_failed++;
            fprintf(stderr, "node %d (%s): SET_ROWS after %s, %s\n", i, ggml_get_name(rec.nodes[i]),
                    i >= 1 ? ggml_op_name(op_at(&rec, i - 1)) : "nothing", i >= 2 ? ggml_op_name(stored) : "nothing");
        }
    }
    // a multiply by one value after RMS_NORM, MUL, ADD, each node consuming the one before
    int n_scales = 0, n_scale_chains = 0;
    for (int i = 0; i < rec.n_nodes; i++) {
        const struct ggml_tensor * by = rec.nodes[i]->src[1];
        if (op_at(&rec, i) != GGML_OP_MUL || by == NULL || ggml_nelements(by) != 1) {
            continue;
        }
        n_scales++;
        bool chain = i >= 3 && op_at(&rec, i - 1) == GGML_OP_ADD && op_at(&rec, i - 2) == GGML_OP_MUL &&
                     op_at(&rec, i - 3) == GGML_OP_RMS_NORM;
        for (int j = i; chain && j > i - 3; j--) {
            chain = rec.nodes[j]->src[0] == rec.nodes[j - 1] || rec.nodes[j]->src[1] == rec.nodes[j - 1];
        }
        if (chain) {
            n_scale_chains++;
        } else {
            n_failed++;
            fprintf(stderr, "node %d (%s): a multiply by one value not after RMS_NORM, MUL, ADD\n", i,
                    ggml_get_name(rec.nodes[i]));
        }
    }
    printf(
        "graph order: %d nodes, %d cache writes: %d right after V's norm, %d right after K's rope; "
        "%d layer scales, %d after their norm, multiply and add\n",
        rec.n_nodes, n_set_rows, n_after_norm, n_after_rope, n_scales, n_scale_chains);

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();

    if (n_set_rows == 0 || n_scales == 0 || n_failed > 0 || n_after_norm != n_after_rope) {
        fprintf(stderr, "graph order: %d nodes not where a fusion needs them\n", n_failed);
        return 1;
    }
    return 0;
}
