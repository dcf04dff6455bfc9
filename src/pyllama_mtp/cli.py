"""``pyllama-mtp`` command line: ``info``, ``generate`` and ``demo`` (greedy, target only for now)."""

from __future__ import annotations

import argparse
import sys
import time


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import build_info

    print(build_info().format())
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from . import Context, Model

    with Model(args.target, n_gpu_layers=args.n_gpu_layers) as target, Context(target, n_ctx=args.ctx_size) as ctx:
        prompt = target.tokenize(args.prompt)
        start = time.perf_counter()
        tokens = ctx.generate_greedy(prompt, args.n_predict)
        elapsed = time.perf_counter() - start
        print(target.detokenize(tokens))
        print(
            f"{len(tokens)} tokens in {elapsed:.3f} s ({len(tokens) / max(elapsed, 1e-9):.1f} tokens/s)",
            file=sys.stderr,
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import Context, Model
    from .fixtures import build_pair, hf_greedy
    from .info import build_info

    print(build_info().format(), file=sys.stderr)
    print("building a tiny random Gemma-4 pair with transformers (cached after the first run)...", file=sys.stderr)
    pair = build_pair()
    with Model(pair.target_gguf, n_gpu_layers=args.n_gpu_layers) as target, Context(target, n_ctx=512) as ctx:
        prompt = target.tokenize(args.prompt)
        ours = ctx.generate_greedy(prompt, args.n_predict)
        ref = hf_greedy(pair, prompt, len(ours))
        same = sum(1 for a, b in zip(ours, ref, strict=False) if a == b)
        print(target.detokenize(ours))
        print(f"parity with Hugging Face greedy: {same}/{len(ours)} tokens identical", file=sys.stderr)
    return 0 if same == len(ours) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyllama-mtp", description="Gemma-4 MTP speculative decoding on llama.cpp")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="llama.cpp commit, backends, patches and devices of this build").set_defaults(
        func=_cmd_info
    )
    gen = sub.add_parser("generate", help="greedy generation with a target model")
    gen.add_argument("-m", "--target", required=True, help="target GGUF")
    gen.add_argument("-p", "--prompt", required=True)
    gen.add_argument("-n", "--n-predict", type=int, default=64)
    gen.add_argument("-c", "--ctx-size", type=int, default=2048)
    gen.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1)
    gen.set_defaults(func=_cmd_generate)
    demo = sub.add_parser("demo", help="build a tiny random Gemma-4 pair and compare greedy output with HF")
    demo.add_argument("-p", "--prompt", default="the quick brown fox")
    demo.add_argument("-n", "--n-predict", type=int, default=32)
    demo.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import PyllamaMtpError

    try:
        return int(args.func(args))
    except PyllamaMtpError as exc:
        print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
        return 1
