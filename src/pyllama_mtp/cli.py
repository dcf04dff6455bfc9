"""``pyllama-mtp`` command line: ``info`` and ``generate`` (greedy, target only for now)."""

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import PyllamaMtpError

    try:
        return int(args.func(args))
    except PyllamaMtpError as exc:
        print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
        return 1
