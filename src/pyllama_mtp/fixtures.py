"""Tiny random Gemma-4 target + assistant pairs, built with Hugging Face ``transformers``.

The HF models are the independent reference; the GGUFs come from the converter the package
ships (:mod:`pyllama_mtp.convert`, the patched tree's ``convert_hf_to_gguf.py``). Results are
cached by a hash of the configuration (``PYLLAMA_MTP_FIXTURE_CACHE``, default
``~/.cache/pyllama-mtp/fixtures``).
Needs the ``[convert]`` extra and torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .convert import convert_hf

FIXTURE_VERSION = 2


@dataclass(frozen=True)
class PairConfig:
    """Shape of a tiny pair. The target and drafter widths differ on purpose (n_embd_out matters)."""

    target_hidden: int = 256
    target_layers: int = 4
    drafter_hidden: int = 128
    drafter_layers: int = 2
    sliding_window: int = 32
    init_std: float = 0.1  # larger than HF's 0.02 so greedy logits have clear margins
    # Gain of the post-attention/post-MLP norms. At 1 the scaled token embedding dominates the
    # residual and, with tied embeddings, a random model repeats its last token forever; at 8
    # the layers dominate and greedy output varies (measured on the default shape).
    branch_gain: float = 8.0
    # Weights that make target and drafter compute the same next-token function (acceptance ~1).
    agree: bool = False
    seed: int = 0
    outtype: str = "f32"
    # > 0: an Edge-style assistant whose LM head is routed through this many token clusters
    # (HF use_ordered_embeddings), scoring the tokens of the top ``centroid_top_k``; the
    # vocabulary is padded to a multiple of ``centroids``.
    centroids: int = 0
    centroid_top_k: int = 4
    # > 0: pad the vocabulary with unused tokens to this size (real Gemma-4 heads: 262144)
    vocab_size: int = 0
    # Attention and MLP shape (the defaults keep tiny pairs tiny; bench shapes set real ones).
    intermediate: int = 0  # the target's MLP width; 0: twice its width (the drafter's is always twice)
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 32
    global_head_dim: int = 64
    full_every: int = 0  # every n-th layer is full attention (Gemma 4: 5); 0: only the last
    save_dtype: str = "float32"  # dtype of the saved HF checkpoint
    # Gemma 4's turn and channel tokens in the vocabulary and its chat template (the one the pinned
    # tree carries for Gemma 4) in the tokenizer, so the GGUFs chat as released models do.
    chat: bool = False
    # The target's parts that only some Gemma 4 sizes have. E2B and E4B: per-layer input embeddings
    # of this width, the last ``kv_shared_layers`` layers reusing earlier layers' KV, and (E2B)
    # those layers' MLPs twice as wide. 26B-A4B and 31B: full-attention layers with their own
    # KV-head count and keys that serve as values. 26B-A4B: a mixture-of-experts block of
    # ``experts`` experts (``experts_used`` a token, each ``expert_intermediate`` wide; 0: half the
    # width) beside the dense MLP.
    per_layer_input: int = 0
    kv_shared_layers: int = 0
    double_wide_mlp: bool = False
    global_kv_heads: int = 0  # 0: n_kv_heads
    k_eq_v: bool = False
    experts: int = 0
    experts_used: int = 2
    expert_intermediate: int = 0

    def key(self) -> str:
        fields = asdict(self)
        if not self.centroids:  # keeps the keys (and caches) of earlier pairs as they were
            del fields["centroids"], fields["centroid_top_k"]
        for name, default in _LATER_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        blob = json.dumps({"v": FIXTURE_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Fields added after pairs were first cached: left out of the key at their default value.
_LATER_FIELDS = {
    "vocab_size": 0,
    "intermediate": 0,
    "n_heads": 4,
    "n_kv_heads": 2,
    "head_dim": 32,
    "global_head_dim": 64,
    "full_every": 0,
    "save_dtype": "float32",
    "chat": False,
    "per_layer_input": 0,
    "kv_shared_layers": 0,
    "double_wide_mlp": False,
    "global_kv_heads": 0,
    "k_eq_v": False,
    "experts": 0,
    "experts_used": 2,
    "expert_intermediate": 0,
}


# Tiny targets with the parts the default pair leaves out (each with a gemma4_assistant drafter).
VARIANTS: dict[str, PairConfig] = {
    # E2B / E4B: per-layer inputs, the last three layers reading earlier layers' KV, double-wide MLPs there
    "per-layer": PairConfig(
        target_layers=6, full_every=3, per_layer_input=64, kv_shared_layers=3, double_wide_mlp=True
    ),
    # 26B-A4B: 8 experts, 2 a token, beside the dense MLP; full-attention layers with one KV head whose
    # keys serve as values
    "moe": PairConfig(experts=8, experts_used=2, expert_intermediate=128, global_kv_heads=1, k_eq_v=True),
}


@dataclass(frozen=True)
class Pair:
    root: Path
    target_hf: Path
    drafter_hf: Path
    target_gguf: Path
    drafter_gguf: Path


def cache_root() -> Path:
    env = os.environ.get("PYLLAMA_MTP_FIXTURE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pyllama-mtp" / "fixtures"


def _quiet_transformers() -> None:
    """No progress bars from transformers: a bar per tiny save or load would drown the caller's own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


# Gemma 4's control tokens that its chat template writes; "<turn|>" ends a turn (an end-of-generation token).
CHAT_TOKENS = ["<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", '<|"|>']


def gemma4_chat_template() -> str:
    """Gemma 4's chat template as the pinned llama.cpp tree carries it (shipped beside the converter)."""
    from .convert import converter_dir

    path = converter_dir() / "models" / "templates" / "google-gemma-4-31B-it.jinja"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: this installation has no Gemma 4 chat template (a trimmed llama.cpp tree?)")
    return path.read_text(encoding="utf-8")


def _tokenizer(vocab_multiple: int = 1, vocab_size: int = 0, chat: bool = False):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [("the quick brown fox jumps over the lazy dog " * 3 + str(i)) for i in range(200)]
    corpus += ["speculative decoding with a drafter head and a target model " * 2] * 50
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], initial_alphabet=[], limit_alphabet=64
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens([f"<0x{i:02X}>" for i in range(256)])
    if chat:
        tok.add_special_tokens(CHAT_TOKENS)
    n_pad = max(vocab_size - tok.get_vocab_size(), 0)
    n_pad += -(tok.get_vocab_size() + n_pad) % vocab_multiple
    tok.add_tokens([f"<unused{i}>" for i in range(n_pad)])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat:
        hf.chat_template = gemma4_chat_template()
    return hf


def _layer_types(layers: int, full_every: int) -> list[str]:
    if full_every <= 0:
        return ["sliding_attention"] * (layers - 1) + ["full_attention"]
    types = ["full_attention" if (i + 1) % full_every == 0 else "sliding_attention" for i in range(layers)]
    types[-1] = "full_attention"  # the drafter shares the last full and last sliding layer's KV
    return types


def _build_hf(cfg: PairConfig, root: Path, device: str | None = None) -> None:
    import torch
    from transformers import Gemma4AssistantConfig, Gemma4AssistantForCausalLM, Gemma4ForCausalLM, Gemma4TextConfig

    _quiet_transformers()
    torch.manual_seed(cfg.seed)
    tok = _tokenizer(max(cfg.centroids, 1), cfg.vocab_size, cfg.chat)
    vocab = len(tok)

    def text_cfg(hidden: int, layers: int, full_every: int, intermediate: int, **extra: Any) -> Gemma4TextConfig:
        args: dict[str, Any] = dict(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
            num_hidden_layers=layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
            head_dim=cfg.head_dim, global_head_dim=cfg.global_head_dim, sliding_window=cfg.sliding_window,
            layer_types=_layer_types(layers, full_every),
            hidden_size_per_layer_input=0, vocab_size_per_layer_input=0,
            pad_token_id=0, eos_token_id=1, bos_token_id=2, final_logit_softcapping=30.0,
            initializer_range=cfg.init_std,
        )  # fmt: skip
        return Gemma4TextConfig(**{**args, **extra})

    target_ffn = cfg.intermediate or 2 * cfg.target_hidden
    extras = _target_extras(cfg, vocab)
    target_cfg = text_cfg(cfg.target_hidden, cfg.target_layers, cfg.full_every, target_ffn, **extras)
    routing = {}
    if cfg.centroids > 0:
        routing = dict(
            use_ordered_embeddings=True, num_centroids=cfg.centroids, centroid_intermediate_top_k=cfg.centroid_top_k
        )
    # the drafter attends to the target's KV: it has the target's full-attention geometry (as the
    # released assistants copy their target's attention settings)
    attention = {key: value for key, value in extras.items() if key in _ATTENTION_KEYS}
    acfg = Gemma4AssistantConfig(
        text_config=text_cfg(cfg.drafter_hidden, cfg.drafter_layers, 0, 2 * cfg.drafter_hidden, **attention).to_dict(),
        backbone_hidden_size=cfg.target_hidden,
        **routing,
    )
    with torch.device(device or "cpu"), torch.no_grad():
        target = Gemma4ForCausalLM(target_cfg).eval()
        drafter = Gemma4AssistantForCausalLM(acfg).eval()
        if cfg.centroids > 0:
            # HF initialises the ordering to zeros; a real one is a permutation of the vocabulary
            drafter.masked_embedding.token_ordering.copy_(torch.randperm(vocab))
            # wide cluster-score gaps, so float noise never changes which clusters are picked
            drafter.masked_embedding.centroids.weight.normal_(0.0, 1.0)
        for layer in [*target.model.layers, *drafter.model.layers]:
            layer.post_attention_layernorm.weight.fill_(cfg.branch_gain)
            layer.post_feedforward_layernorm.weight.fill_(cfg.branch_gain)
        _vary_target_extras(target, cfg)
        if cfg.agree:
            _force_agreement(target, drafter, cfg)
    dtype = getattr(torch, cfg.save_dtype)
    target.to(dtype).save_pretrained(root / "target-hf")
    tok.save_pretrained(root / "target-hf")
    drafter.to(dtype).save_pretrained(root / "drafter-hf")
    tok.save_pretrained(root / "drafter-hf")


def _target_extras(cfg: PairConfig, vocab: int) -> dict[str, Any]:
    """Gemma4TextConfig arguments for the target's optional parts (none at their defaults)."""
    extra: dict[str, Any] = {}
    if cfg.per_layer_input:
        extra.update(hidden_size_per_layer_input=cfg.per_layer_input, vocab_size_per_layer_input=vocab)
    if cfg.kv_shared_layers:
        extra.update(num_kv_shared_layers=cfg.kv_shared_layers, use_double_wide_mlp=cfg.double_wide_mlp)
    if cfg.global_kv_heads:
        extra["num_global_key_value_heads"] = cfg.global_kv_heads
    if cfg.k_eq_v:
        extra["attention_k_eq_v"] = True
    if cfg.experts:
        extra.update(
            enable_moe_block=True, num_experts=cfg.experts, top_k_experts=cfg.experts_used,
            moe_intermediate_size=cfg.expert_intermediate or cfg.target_hidden // 2,
        )  # fmt: skip
    return extra


_ATTENTION_KEYS = ("num_global_key_value_heads", "attention_k_eq_v")


def _vary_target_extras(target, cfg: PairConfig) -> None:  # type: ignore[no-untyped-def]
    """Give the optional parts' scales values other than HF's ones, so a converter or graph that
    dropped one would change the output; and the per-layer branch the gain the others have."""
    import torch

    for layer in target.model.layers:
        if cfg.per_layer_input:
            layer.post_per_layer_input_norm.weight.fill_(cfg.branch_gain)
        if cfg.experts:
            # expert scores of std ~3 rather than init_std's ~0.1: unequal routing weights, so their
            # normalisation and the per-expert scales show in the output
            layer.router.proj.weight.normal_(0.0, 3.0)
            layer.router.scale.uniform_(0.5, 1.5)
            layer.router.per_expert_scale.uniform_(0.5, 1.5)
            for norm in (layer.post_feedforward_layernorm_1, layer.post_feedforward_layernorm_2):
                norm.weight.fill_(cfg.branch_gain)
        if cfg.per_layer_input or cfg.experts:
            # near 1: over E2B's 35 layers their product stays within a few times 1
            layer.layer_scalar.copy_(torch.empty_like(layer.layer_scalar).uniform_(0.8, 1.2))


def _force_agreement(target, drafter, cfg: PairConfig) -> None:  # type: ignore[no-untyped-def]
    """Make both models predict argmax_s <E_s, E_t> for last token t, E the target's embeddings.

    Every attention and MLP branch writes zeros, so each model's final hidden state is its
    (normalised) input embedding. The target's embedding lives in the first ``d`` coordinates
    (``d`` = drafter width); the drafter's pre-projection keeps exactly those coordinates of the
    token half of its input and its (tied) LM head is the same d columns, so both models score
    the vocabulary identically up to a positive scale.
    """
    import torch

    d = cfg.drafter_hidden
    for layer in [*target.model.layers, *drafter.model.layers]:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        if getattr(layer, "enable_moe_block", False):
            layer.experts.down_proj.zero_()
        if getattr(layer, "hidden_size_per_layer_input", 0):
            layer.per_layer_projection.weight.zero_()
    emb = target.model.embed_tokens.weight
    emb[:, d:] = 0
    target.model.norm.weight.fill_(1.0)
    drafter.model.norm.weight.fill_(1.0)
    drafter.model.embed_tokens.weight.copy_(emb[:, :d])
    proj = drafter.pre_projection.weight
    proj.zero_()
    proj[:, :d] = torch.eye(d)


def build_pair(cfg: PairConfig = PairConfig(), device: str | None = None) -> Pair:
    """Build (or reuse from the cache) the HF pair and its GGUF conversion.

    ``device`` ("cuda") initialises the HF models there (fast for real-size shapes); random
    weights then differ from a CPU build of the same config, and the cache keeps whichever came first.
    """
    root = cache_root() / cfg.key()
    pair = Pair(root, root / "target-hf", root / "drafter-hf", root / "target.gguf", root / "drafter.gguf")
    if (root / "done").is_file():
        return pair
    root.mkdir(parents=True, exist_ok=True)
    _build_hf(cfg, root, device)
    convert_hf(pair.target_hf, pair.target_gguf, outtype=cfg.outtype)
    convert_hf(pair.drafter_hf, pair.drafter_gguf, outtype=cfg.outtype)
    (root / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    (root / "done").write_text("ok")
    return pair


@functools.lru_cache(maxsize=4)
def hf_target(pair: Pair):  # type: ignore[no-untyped-def]
    """The pair's HF target in f32, loaded once per process."""
    import torch
    from transformers import Gemma4ForCausalLM

    _quiet_transformers()

    return Gemma4ForCausalLM.from_pretrained(pair.target_hf, dtype=torch.float32).eval()


@functools.lru_cache(maxsize=4)
def hf_drafter(pair: Pair):  # type: ignore[no-untyped-def]
    """The pair's HF assistant in f32, loaded once per process."""
    import torch
    from transformers import Gemma4AssistantForCausalLM

    _quiet_transformers()

    return Gemma4AssistantForCausalLM.from_pretrained(pair.drafter_hf, dtype=torch.float32).eval()


def hf_greedy(pair: Pair, prompt: list[int], max_new_tokens: int) -> list[int]:
    """New tokens of Hugging Face's own greedy generation with the pair's target (the reference)."""
    import torch

    hf = hf_target(pair)
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False)
    return [int(t) for t in out[0, len(prompt) :]]


def hf_first_draft(pair: Pair, prompt: list[int], n_draft: int) -> tuple[list[int], list[float]]:
    """What HF's Gemma-4 assistant drafts at the first step of a draft-MTP session.

    The session keeps the prompt's last token out of the target's KV: the drafter pairs it with
    the target's last hidden state over ``prompt[:-1]`` and reads that KV, at position
    ``len(prompt) - 1``. This calls the HF models exactly as HF's own assisted generation does
    (``SinglePositionMultiTokenCandidateGenerator.get_candidates``). Returns the drafted ids and
    the top-2 logit margin of the drafter at each of them.
    """
    import torch

    drafts: list[int] = []
    margins: list[float] = []
    for logits in hf_draft_logits(pair, prompt, n_draft):
        top = torch.topk(torch.from_numpy(logits), 2).values
        margins.append(float(top[0] - top[1]))
        drafts.append(int(logits.argmax()))
    return drafts, margins


def hf_draft_logits(pair: Pair, prompt: list[int], n_draft: int) -> list[Any]:
    """The HF assistant's logits row (numpy, f32) at each of the first step's draft positions."""
    import torch

    if len(prompt) < 2:
        raise ValueError("the prompt needs at least two tokens")
    target, drafter = hf_target(pair), hf_drafter(pair)
    rows = []
    with torch.no_grad():
        out = target(
            torch.tensor([prompt[:-1]]), output_hidden_states=True, return_shared_kv_states=True, use_cache=True
        )
        hidden = out.hidden_states[-1][:, -1:]
        shared_kv = out.shared_kv_states
        last = torch.tensor([[prompt[-1]]])
        position = torch.tensor([[len(prompt) - 1]])
        mask = torch.ones(1, len(prompt), dtype=torch.long)
        embed = target.get_input_embeddings()
        for _ in range(n_draft):
            res = drafter(
                inputs_embeds=torch.cat([embed(last), hidden], dim=-1),
                attention_mask=mask,
                position_ids=position,
                shared_kv_states=shared_kv,
                use_cache=False,
            )
            logits = res.logits[0, -1]
            rows.append(logits.float().numpy().copy())
            last = logits.argmax().view(1, 1)
            hidden = res.last_hidden_state
    return rows


def hf_router_margins(pair: Pair, tokens: list[int]) -> list[float]:
    """Per position, how clearly HF's routers chose their experts: over the mixture-of-experts
    layers, the least gap between the last expert chosen and the first left out, in units of that
    layer's score RMS over the sequence (inf for a target without experts). Where it is small,
    float noise before the router can swap an expert and move the output by far more than rounding."""
    import torch

    hf = hf_target(pair)
    scores: list[Any] = []
    hooks = [
        layer.router.proj.register_forward_hook(lambda _m, _i, out: scores.append(out.reshape(-1, out.shape[-1])))
        for layer in hf.model.layers
        if getattr(layer, "enable_moe_block", False)
    ]
    try:
        with torch.no_grad():
            hf(torch.tensor([tokens]))
    finally:
        for hook in hooks:
            hook.remove()
    margins = torch.full((len(tokens),), float("inf"))
    k = hf.config.top_k_experts or 0
    for layer_scores in scores:
        top = torch.topk(layer_scores.float(), k + 1, dim=-1).values
        rms = layer_scores.float().pow(2).mean().sqrt()
        margins = torch.minimum(margins, (top[:, k - 1] - top[:, k]) / rms)
    return [float(m) for m in margins]


def hf_greedy_with_margins(pair: Pair, prompt: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
    """HF greedy new tokens and the top-2 logit margin at each (to judge near-ties)."""
    import torch

    hf = hf_target(pair)
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = [int(t) for t in out.sequences[0, len(prompt) :]]
    margins = []
    for row in out.logits:
        top = torch.topk(row[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    return tokens, margins
