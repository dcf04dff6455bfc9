// Chat templates: a conversation rendered to a prompt by the template the GGUF carries
// (tokenizer.chat_template), through llama.cpp's own chat machinery (common/chat.h, its jinja
// engine), exactly as llama-server renders /v1/chat/completions.
#include "chat.h"

#include <memory>
#include <string>
#include <vector>

#include "llama_mtp.h"
#include "shim_internal.h"

using llama_mtp_internal::guarded;
using llama_mtp_internal::set_error;

struct llama_mtp_chat_template {
    common_chat_templates_ptr templates;
    // the last rendering, valid until the next one
    std::string              prompt;
    std::vector<std::string> stops;
};

extern "C" {

struct llama_mtp_chat_params llama_mtp_chat_default_params(void) {
    llama_mtp_chat_params p{};
    p.add_generation_prompt = true;
    p.enable_thinking       = false;
    return p;
}

int32_t llama_mtp_chat_template_init(const struct llama_model * model, const char * template_override,
                                     struct llama_mtp_chat_template ** out) {
    if (model == nullptr || out == nullptr) {
        set_error("model and out must not be NULL");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    *out = nullptr;
    return guarded("chat template", [&]() -> int32_t {
        const std::string override_src = template_override != nullptr ? template_override : "";
        // common_chat_templates_init falls back to ChatML for a model without a template; a user
        // would then chat in a format the model never saw, so say so instead (ask for "chatml").
        if (override_src.empty() && llama_model_chat_template(model, nullptr) == nullptr) {
            set_error("the model has no chat template (no tokenizer.chat_template in the GGUF); pass one");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        auto t = std::make_unique<llama_mtp_chat_template>();
        try {
            t->templates = common_chat_templates_init(model, override_src);
        } catch (const std::exception &) {
            // the jinja engine's reason goes to llama.cpp's common log; what it throws here says nothing
            set_error("the chat template does not parse (llama.cpp's jinja engine refused it)");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        if (!t->templates) {
            set_error("the chat template does not parse");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        *out = t.release();
        return LLAMA_MTP_OK;
    });
}

void llama_mtp_chat_template_free(struct llama_mtp_chat_template * tmpl) {
    delete tmpl;
}

int32_t llama_mtp_chat_template_apply(struct llama_mtp_chat_template *      tmpl,
                                      const struct llama_mtp_chat_message * messages, int32_t n_messages,
                                      struct llama_mtp_chat_params params) {
    if (tmpl == nullptr || (messages == nullptr && n_messages > 0) || n_messages < 0) {
        set_error("tmpl must not be NULL and messages must hold n_messages >= 0 entries");
        return LLAMA_MTP_ERR_INVALID_ARG;
    }
    for (int32_t i = 0; i < n_messages; ++i) {
        if (messages[i].role == nullptr || messages[i].content == nullptr) {
            set_error("message " + std::to_string(i) + " has no role or no content");
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
    }
    return guarded("chat template", [&]() -> int32_t {
        common_chat_templates_inputs inputs;
        inputs.use_jinja             = true;
        inputs.add_generation_prompt = params.add_generation_prompt;
        inputs.enable_thinking       = params.enable_thinking;
        for (int32_t i = 0; i < n_messages; ++i) {
            common_chat_msg msg;
            msg.role    = messages[i].role;
            msg.content = messages[i].content;
            inputs.messages.push_back(std::move(msg));
        }
        try {
            common_chat_params out = common_chat_templates_apply(tmpl->templates.get(), inputs);
            tmpl->prompt           = std::move(out.prompt);
            tmpl->stops            = std::move(out.additional_stops);
        } catch (const std::exception & e) {
            // the template's own raise_exception (a role it refuses, a bad message order) or a
            // message the chat layer rejects: bad input, not an internal failure
            set_error(std::string("the chat template rejected the messages: ") + e.what());
            return LLAMA_MTP_ERR_INVALID_ARG;
        }
        return LLAMA_MTP_OK;
    });
}

const char * llama_mtp_chat_template_prompt(const struct llama_mtp_chat_template * tmpl) {
    return tmpl != nullptr ? tmpl->prompt.c_str() : "";
}

int32_t llama_mtp_chat_template_n_stops(const struct llama_mtp_chat_template * tmpl) {
    return tmpl != nullptr ? static_cast<int32_t>(tmpl->stops.size()) : 0;
}

const char * llama_mtp_chat_template_stop(const struct llama_mtp_chat_template * tmpl, int32_t i) {
    if (tmpl == nullptr || i < 0 || i >= static_cast<int32_t>(tmpl->stops.size())) {
        return nullptr;
    }
    return tmpl->stops[static_cast<size_t>(i)].c_str();
}

}  // extern "C"
