"""``pyllama-mtp`` command line: ``info``, ``generate`` (streaming, draft-MTP), ``chat`` (interactive,
with the model's chat template), ``serve`` (an OpenAI-compatible server), ``convert`` (a Hugging
Face checkpoint to GGUF), ``rpc-server`` (this machine's devices for a model split elsewhere),
``demo``, ``trace-report``, ``segment`` (speaker segmentation of a WAV file),
``convert-segmentation`` and ``bench``."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ._kv_types import KV_CACHE_TYPES
from .convert import OUTTYPES


def _n_draft(value: str) -> int | str:
    """``--n-draft``: a number of tokens, or ``auto`` (each step chooses, up to ``--max-draft``)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import build_info

    print(build_info().format())
    return 0


def _progress(enabled: bool, n: int, total: int, elapsed: float, acceptance: float | None) -> None:
    if not enabled:
        return
    rate = n / elapsed if elapsed > 0 else 0.0
    acc = f", acceptance {acceptance:.2f}" if acceptance is not None else ""
    sys.stderr.write(f"\r\x1b[2K[{n}/{total} tokens, {rate:.1f} tokens/s{acc}]")
    sys.stderr.flush()


def _cmd_generate(args: argparse.Namespace) -> int:
    from . import Model, MtpSession, Sampling

    sampling = Sampling(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    n_draft = args.n_draft if args.drafter or args.self_draft else 0
    show_progress = not args.no_progress and sys.stderr.isatty()
    with (
        Model(args.target, n_gpu_layers=args.n_gpu_layers, **_target_placement(args)) as target,
        (Model(args.drafter, n_gpu_layers=args.n_gpu_layers) if args.drafter else _nothing()) as drafter,
        MtpSession(
            target, drafter, n_draft=n_draft, max_draft=args.max_draft, p_min=args.p_min, n_ctx=args.ctx_size,
            n_threads=args.threads,
            sampling=sampling, trace=args.trace, pipeline=args.pipeline, exact=args.exact,
            kv_cache_type=args.cache_type,
        ) as session,
    ):  # fmt: skip
        start = time.perf_counter()
        n = 0
        for step in session.steps(args.prompt, args.n_predict):
            sys.stdout.write(target.detokenize(step.tokens))
            sys.stdout.flush()
            n += len(step.tokens)
            acceptance = session.stats.acceptance_rate if n_draft else None
            _progress(show_progress, n, args.n_predict, time.perf_counter() - start, acceptance)
        if show_progress:
            sys.stderr.write("\r\x1b[2K")
        print()
        print(session.stats.format(), file=sys.stderr)
    return 0


def _read_template(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"pyllama-mtp: error: cannot read the chat template: {exc}") from None


def _cmd_chat(args: argparse.Namespace) -> int:
    from . import Model, MtpSession, Sampling

    template = _read_template(args.chat_template_file)
    sampling = Sampling(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    n_draft = args.n_draft if args.drafter else 0
    interactive = sys.stdin.isatty()
    with (
        Model(args.target, n_gpu_layers=args.n_gpu_layers, **_target_placement(args)) as target,
        (Model(args.drafter, n_gpu_layers=args.n_gpu_layers) if args.drafter else _nothing()) as drafter,
        MtpSession(
            target, drafter, n_draft=n_draft, max_draft=args.max_draft, n_ctx=args.ctx_size, n_threads=args.threads,
            sampling=sampling, chat_template=template, exact=args.exact, kv_cache_type=args.cache_type,
        ) as session,
    ):  # fmt: skip
        session.chat_template  # noqa: B018  (a model without a template fails here, before any input)
        messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
        if interactive:
            mode = f"draft-mtp, n_draft={n_draft}" if n_draft else "target alone"
            print(f"chatting with {target.path.name} ({mode}). Ctrl-C stops a reply; Ctrl-D or /exit leaves.",
                  file=sys.stderr)  # fmt: skip
        max_tokens = args.n_predict if args.n_predict >= 0 else None
        # Ctrl-C stops a reply: Python raises KeyboardInterrupt only where SIGINT was not ignored when
        # it started, and a shell starts background jobs with SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        while True:
            try:
                line = input("> " if interactive else "")
            except (EOFError, KeyboardInterrupt):
                break
            if line.strip() in ("/exit", "/quit"):
                break
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line})
            reply: list[str] = []
            try:
                for piece in session.chat_stream(messages, max_tokens):
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                    reply.append(piece)
            except KeyboardInterrupt:  # stops this reply, not the program
                sys.stdout.write(" [stopped]")
            sys.stdout.write("\n")
            sys.stdout.flush()
            messages.append({"role": "assistant", "content": "".join(reply)})
            if args.verbose:
                print(session.stats.format(), file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .session import Sampling

    try:
        from .server import ServerConfig, serve
    except ImportError as exc:
        print(f"pyllama-mtp: error: serve needs the [serve] extra (pip install 'pyllama-mtp[serve]'): {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.parallel < 1:
        print("pyllama-mtp: error: --parallel must be >= 1", file=sys.stderr)
        return 1
    config = ServerConfig(
        target=Path(args.target),
        drafter=Path(args.drafter) if args.drafter else None,
        model_name=args.alias or "",
        n_parallel=args.parallel,
        n_ctx=args.ctx_size,
        n_draft=args.n_draft,
        max_draft=args.max_draft,
        n_gpu_layers=args.n_gpu_layers,
        target_options=_target_placement(args),
        n_threads=args.threads,
        chat_template=_read_template(args.chat_template_file),
        sampling=Sampling(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, seed=args.seed),
        exact=args.exact,
        kv_cache_type=args.cache_type,
    )
    print(f"pyllama-mtp: serving {config.name} on http://{args.host}:{args.port} ({args.parallel} slots)",
          file=sys.stderr, flush=True)  # fmt: skip
    serve(config, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _cmd_rpc_server(args: argparse.Namespace) -> int:
    binary = Path(__file__).resolve().parent / "lib" / ("rpc-server.exe" if os.name == "nt" else "rpc-server")
    if not binary.is_file():
        print(f"pyllama-mtp: error: this installation has no RPC server ({binary} is missing)", file=sys.stderr)
        return 1
    if not 0 < args.port < 65536:
        print(f"pyllama-mtp: error: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 1
    threads = args.threads if args.threads > 0 else os.cpu_count() or 1
    argv = [str(binary), "-H", args.host, "-p", str(args.port), "-t", str(threads)]
    if args.device:
        argv += ["-d", ",".join(args.device)]
    if args.cache:
        argv.append("-c")
    sys.stdout.flush()
    sys.stderr.flush()
    # the server replaces this process: signals, exit status and the pid are its own
    os.execv(binary, argv)
    return 1  # pragma: no cover - execv does not return


class _nothing:
    """A context manager that yields None (no drafter)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import Model, MtpSession
    from .fixtures import PairConfig, build_pair, hf_greedy_with_margins
    from .info import build_info

    print(build_info().format(), file=sys.stderr)
    print("building tiny random Gemma-4 pairs with transformers (cached after the first run)...", file=sys.stderr)
    ok = True
    for label, cfg in (("random pair", PairConfig()), ("agreeing pair", PairConfig(agree=True))):
        pair = build_pair(cfg)
        with (
            Model(pair.target_gguf, n_gpu_layers=args.n_gpu_layers) as target,
            Model(pair.drafter_gguf, n_gpu_layers=args.n_gpu_layers) as drafter,
            MtpSession(target, drafter, n_draft=args.n_draft, n_ctx=512) as session,
        ):
            prompt = target.tokenize(args.prompt)
            ours = session.complete(prompt, args.n_predict)
            stats = session.stats
            ref, margins = hf_greedy_with_margins(pair, prompt, args.n_predict)
            diverged = next((i for i, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b), None)
            if diverged is None and len(ours) == len(ref):
                parity = f"{len(ours)}/{len(ref)} tokens identical to Hugging Face greedy"
            elif diverged is not None and margins[diverged] < NEAR_TIE:
                parity = (
                    f"identical to Hugging Face greedy for {diverged} tokens, then a near-tie "
                    f"(HF top-2 margin {margins[diverged]:.4f} < {NEAR_TIE})"
                )
            else:
                parity = f"MISMATCH with Hugging Face greedy at token {diverged}"
                ok = False
            print(f"\n== {label}: draft-mtp, n_draft={args.n_draft} ==")
            text = target.detokenize(ours)
            print(repr(text if len(text) <= 120 else text[:117] + "..."))
            print(f"parity:     {parity}")
            print(f"acceptance: {stats.acceptance_rate:.3f} ({stats.n_accepted}/{stats.n_drafted} drafts), "
                  f"{stats.tokens_per_step:.2f} tokens per target pass")  # fmt: skip
    return 0 if ok else 1


# Top-2 logit margin under which llama.cpp and HF may legitimately pick different tokens (tests/parity.py).
NEAR_TIE = 0.05


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_hf

    print(f"converting {args.hf_dir} ({args.outtype})...", file=sys.stderr)
    print(convert_hf(args.hf_dir, args.out, outtype=args.outtype, verbose=args.verbose))
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize

    print(f"quantizing {args.model} to {args.type}...", file=sys.stderr)
    try:
        out = quantize(
            args.model,
            args.out,
            quant_type=args.type,
            n_threads=args.threads,
            allow_requantize=args.allow_requantize,
        )
    except ValueError as exc:
        print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
        return 2
    mib = out.stat().st_size / 2**20
    print(f"{out} ({mib:.1f} MiB, {Path(args.model).stat().st_size / 2**20:.1f} MiB before)", file=sys.stderr)
    return 0


def _cmd_convert_segmentation(args: argparse.Namespace) -> int:
    from .convert_segmentation import convert

    try:
        print(convert(args.onnx, args.out, args.sample_rate))
    except OSError as exc:  # onnx.load of a missing or unreadable file
        print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_trace_report(args: argparse.Namespace) -> int:
    from .trace import plot, read_trace

    try:
        summary = read_trace(args.file)
    except (OSError, ValueError) as exc:
        print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
        return 1
    print(summary.format())
    if args.plot:
        print(f"plot: {plot(summary, args.plot)}")
    return 0


def _read_wav(path: str) -> tuple[Any, int]:
    """Mono 16-bit PCM WAV -> float32 samples in [-1, 1) and the sample rate."""
    import wave

    import numpy as np

    try:
        with wave.open(path, "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ValueError(
                    f"{path}: need mono 16-bit PCM, got {w.getnchannels()} channels of {8 * w.getsampwidth()} bits"
                )
            rate, frames = w.getframerate(), w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from exc
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0, rate


def _cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np

    from .segmentation import Segmenter, to_speakers

    try:
        audio, rate = _read_wav(args.audio)
    except (OSError, ValueError) as exc:
        print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
        return 1
    show_progress = not args.no_progress and sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if show_progress:
            sys.stderr.write(f"\r\x1b[2K[{done}/{total} windows]")
            sys.stderr.flush()

    with Segmenter(args.model, use_gpu=args.n_gpu_layers != 0, n_threads=args.threads) as seg:
        if rate != seg.sample_rate:
            print(
                f"pyllama-mtp: error: {args.audio} is at {rate} Hz, the model at {seg.sample_rate} Hz", file=sys.stderr
            )
            return 1
        try:
            windows = seg.segment_long(
                audio, window_s=args.window, step_s=args.step, batch_size=args.batch_size, progress=progress
            )
        except ValueError as exc:
            print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
            return 1
    if show_progress:
        sys.stderr.write("\r\x1b[2K")
    print("start_s  frames  silent  1 speaker  2 speakers")
    for start, lp in zip(windows.starts, windows.log_probs, strict=True):
        counts = np.bincount(to_speakers(lp).sum(axis=1), minlength=3)
        print(f"{start:7.2f}  {len(lp):6d}  {counts[0]:6d}  {counts[1]:9d}  {counts[2]:10d}")
    if args.out:
        np.save(args.out, windows.log_probs)
        print(f"log-probabilities (windows, frames, classes): {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from . import benchmark
    from .benchmark.shapes import REGIMES

    if args.table:
        print(benchmark.markdown_table(json.loads(Path(args.table).read_text())))
        return 0
    upstream = args.upstream or os.environ.get("PYLLAMA_MTP_UPSTREAM_BIN")
    if upstream and not Path(upstream).is_file():
        print(f"pyllama-mtp: error: no upstream binary at {upstream}", file=sys.stderr)
        return 1
    server = args.upstream_server or os.environ.get("PYLLAMA_MTP_UPSTREAM_SERVER")
    if server and not Path(server).is_file():
        print(f"pyllama-mtp: error: no llama-server at {server}", file=sys.stderr)
        return 1
    opts = benchmark.Options(
        mode="cpu" if args.cpu else "gpu",
        shapes=args.shape or (),
        regimes=args.regime or REGIMES,
        ks=tuple(args.k or (1, 3)),
        upstream=Path(upstream) if upstream else None,
        upstream_server=Path(server) if server else None,
        hf=not args.no_hf,
        n_predict=args.n_predict,
        repeats=args.repeats,
        mixed_acceptance=args.mixed_acceptance,
        commit=args.commit,
        rpc=args.rpc,
        devices=args.devices,
        exact=args.exact,
    )
    try:
        result = benchmark.run(opts)
    except RuntimeError as exc:
        print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
        return 1
    result["command"] = shlex.join(["pyllama-mtp", *args.argv])  # what to type to run it again
    for path in benchmark.write(result, Path(args.out_dir), plot=not args.no_plot):
        print(path)
    print(json.dumps(result["summary"], indent=1))
    return 0


def _csv(kind: type[Any]) -> Any:
    """An argparse type: a comma-separated list of ``kind``, as llama.cpp's ``--rpc`` and ``-ts`` take."""

    def parse(value: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}") from None

    return parse


def _placement_args(p: argparse.ArgumentParser) -> None:
    """Where the target's layers run, past one device (llama.cpp's flags); the drafter stays local."""
    p.add_argument("--rpc", type=_csv(str), default=(), help="RPC servers host:port,... (pyllama-mtp rpc-server)")
    p.add_argument("-dev", "--device", type=_csv(str), default=(), help="local devices, e.g. CUDA0,CUDA1 or CPU")
    p.add_argument("-sm", "--split-mode", choices=["none", "layer", "row"], default="layer")
    p.add_argument("-ts", "--tensor-split", type=_csv(float), default=(), help="layer shares per device, e.g. 1,1,2")
    p.add_argument("-mg", "--main-gpu", type=int, default=0, help="the device index for --split-mode none")


def _target_placement(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "rpc": args.rpc,
        "devices": args.device,
        "split_mode": args.split_mode,
        "tensor_split": args.tensor_split,
        "main_device": args.main_gpu,
    }


def _cache_type_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-ct",
        "--cache-type",
        choices=sorted(KV_CACHE_TYPES),
        default="f16",
        help="KV cache type for K and V (default f16; turbo4/turbo3/turbo2: 4.5/3.5/2.5 bits a value)",
    )


def _model_args(p: argparse.ArgumentParser) -> None:
    """The model, drafting and sampling options chat and serve share with llama.cpp's tools."""
    p.add_argument("-m", "--target", required=True, help="target GGUF")
    p.add_argument("-md", "--drafter", help="drafter GGUF (gemma4_assistant); omit for target-only decoding")
    p.add_argument("--n-draft", type=_n_draft, default=3, help="tokens drafted per step, or auto (default 3)")
    p.add_argument("--max-draft", type=int, default=3, help="with --n-draft auto: the most a step drafts")
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1)
    p.add_argument("-t", "--threads", type=int, default=0)
    p.add_argument("--temp", type=float, default=0.0, help="temperature; 0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("-s", "--seed", type=int, default=None)
    p.add_argument("--chat-template-file", help="a jinja chat template to use instead of the model's own")
    p.add_argument(
        "--exact", action="store_true", help="verify rows bitwise as one-token decodes: drafting changes no token"
    )
    _cache_type_arg(p)
    _placement_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyllama-mtp", description="Gemma-4 MTP speculative decoding on llama.cpp")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="llama.cpp commit, backends, patches and devices of this build").set_defaults(
        func=_cmd_info
    )
    gen = sub.add_parser("generate", help="stream text from a target, with a draft-MTP drafter if given")
    gen.add_argument("-m", "--target", required=True, help="target GGUF")
    gen.add_argument("-md", "--drafter", help="drafter GGUF (gemma4_assistant); omit for target-only decoding")
    gen.add_argument("--self-draft", action="store_true", help="draft with the target's own MTP head (nextn)")
    gen.add_argument("-p", "--prompt", required=True)
    gen.add_argument("-n", "--n-predict", type=int, default=128)
    gen.add_argument("--n-draft", type=_n_draft, default=3, help="tokens drafted per step, or auto (default 3)")
    gen.add_argument("--max-draft", type=int, default=3, help="with --n-draft auto: the most a step drafts")
    gen.add_argument("--p-min", type=float, default=0.0, help="stop drafting below this draft probability")
    gen.add_argument("-c", "--ctx-size", type=int, default=2048)
    gen.add_argument("-t", "--threads", type=int, default=0)
    gen.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1)
    gen.add_argument("--temp", type=float, default=0.0, help="temperature; 0 = greedy (default)")
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("-s", "--seed", type=int, default=None)
    gen.add_argument(
        "--exact", action="store_true", help="verify rows bitwise as one-token decodes: drafting changes no token"
    )
    _cache_type_arg(gen)
    _placement_args(gen)
    gen.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    gen.add_argument("--trace", help="write an NDJSON acceptance trace here (see trace-report)")
    gen.add_argument(
        "--pipeline",
        choices=["sync", "async"],
        default="sync",
        help="async: queue each next draft behind the verify pass (same tokens; default sync)",
    )
    gen.set_defaults(func=_cmd_generate)
    chat = sub.add_parser(
        "chat",
        help="chat in the terminal with the target's own chat template, drafting with -md",
        description="Reads a message per line (interactive on a terminal), streams each reply and keeps the "
        "conversation, reusing its KV cache turn by turn. Ctrl-C stops a reply; Ctrl-D or /exit leaves.",
    )
    _model_args(chat)
    chat.add_argument("-n", "--n-predict", type=int, default=-1, help="tokens per reply; -1: until the turn ends")
    chat.add_argument("-c", "--ctx-size", type=int, default=4096)
    chat.add_argument("-sys", "--system", help="a system message opening the conversation")
    chat.add_argument("-v", "--verbose", action="store_true", help="print the session's counters after each reply")
    chat.set_defaults(func=_cmd_chat)
    srv = sub.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions) over draft-MTP sessions",
        description="One draft-MTP session per slot; requests wait for a slot in arrival order. Needs the "
        "[serve] extra. Requests that set no sampling use --temp/--top-k/--top-p/--seed (default greedy).",
    )
    _model_args(srv)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("-np", "--parallel", type=int, default=1, help="slots: requests served at once (default 1)")
    srv.add_argument("-c", "--ctx-size", type=int, default=4096, help="context per slot (default 4096)")
    srv.add_argument("-a", "--alias", help="the model id clients name (default: the target file's stem)")
    srv.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    srv.set_defaults(func=_cmd_serve)
    rpc = sub.add_parser(
        "rpc-server",
        help="serve this machine's devices to a Model(rpc=[...]) elsewhere (llama.cpp's rpc-server)",
        description="Runs the RPC server this package ships: a Model on another machine can place layers on this "
        "machine's devices with rpc=['HOST:PORT'] (--rpc on the CLI). It has no authentication: bind it to a "
        "trusted network only. Ctrl-C stops it.",
    )
    rpc.add_argument("-H", "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    rpc.add_argument("-p", "--port", type=int, default=50052, help="port (default 50052)")
    rpc.add_argument("-d", "--device", type=_csv(str), default=(), help="devices to serve (default: GPUs, else CPU)")
    rpc.add_argument("-t", "--threads", type=int, default=0, help="CPU threads (default: every core)")
    rpc.add_argument("-c", "--cache", action="store_true", help="cache received weights on disk ($LLAMA_CACHE/rpc)")
    rpc.set_defaults(func=_cmd_rpc_server)
    conv = sub.add_parser(
        "convert",
        help="convert a Hugging Face Gemma 4 target or gemma4_assistant folder to GGUF",
        description="Runs the patched llama.cpp converter this package ships (Edge assistants' centroid-routed "
        "heads included). Needs the [convert] extra and torch.",
    )
    conv.add_argument("hf_dir", help="the checkpoint folder (config.json, *.safetensors, tokenizer)")
    conv.add_argument("out", help="the GGUF file to write")
    conv.add_argument("--outtype", choices=OUTTYPES, default="f16", help="tensor type (default f16)")
    conv.add_argument("-v", "--verbose", action="store_true", help="show the converter's log")
    conv.set_defaults(func=_cmd_convert)
    quant = sub.add_parser(
        "quantize",
        help="rewrite a GGUF's weights in a smaller type (as llama-quantize)",
        description="Quantizes with the pinned llama.cpp. People run a Gemma 4 pair as a Q4_K_M target and a "
        "Q8_0 drafter.",
    )
    quant.add_argument("model", help="the GGUF to read (f32, f16 or bf16; quantized with --allow-requantize)")
    quant.add_argument("out", help="the GGUF to write")
    quant.add_argument(
        "type", nargs="?", default="Q4_K_M", help="llama-quantize's type name (default Q4_K_M); a wrong one lists them"
    )
    quant.add_argument("-t", "--threads", type=int, default=0, help="threads (default: every core)")
    quant.add_argument(
        "--allow-requantize", action="store_true", help="accept a model whose weights are already quantized"
    )
    quant.set_defaults(func=_cmd_quantize)
    rep = sub.add_parser("trace-report", help="acceptance by draft position from an NDJSON trace")
    rep.add_argument("file")
    rep.add_argument("--plot", help="also write a PNG bar chart here (needs matplotlib)")
    rep.set_defaults(func=_cmd_trace_report)
    seg = sub.add_parser("segment", help="speaker segmentation of a WAV file (pyannote segmentation GGUF)")
    seg.add_argument("-m", "--model", required=True, help="segmentation GGUF (pyllama-mtp convert-segmentation)")
    seg.add_argument("audio", help="mono 16-bit PCM WAV at the model's sample rate")
    seg.add_argument("--window", type=float, default=10.0, help="window length, seconds (default 10)")
    seg.add_argument("--step", type=float, default=2.5, help="hop between windows, seconds (default 2.5)")
    seg.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1, help="0 runs on the CPU")
    seg.add_argument("-b", "--batch-size", type=int, default=8, help="windows run together (default 8)")
    seg.add_argument("-t", "--threads", type=int, default=0, help="CPU threads (default: all)")
    seg.add_argument("-o", "--out", help="also save the log-probabilities as .npy")
    seg.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    seg.set_defaults(func=_cmd_segment)
    conv_seg = sub.add_parser(
        "convert-segmentation", help="convert a pyannote segmentation ONNX model (segmentation-3.0 shape) to GGUF"
    )
    conv_seg.add_argument("onnx", help="the ONNX model")
    conv_seg.add_argument("out", help="the GGUF file to write")
    conv_seg.add_argument("--sample-rate", type=int, default=16000)
    conv_seg.set_defaults(func=_cmd_convert_segmentation)
    demo = sub.add_parser("demo", help="build tiny Gemma-4 pairs, run draft-mtp, print parity with HF and acceptance")
    demo.add_argument("-p", "--prompt", default="the quick brown fox")
    demo.add_argument("-n", "--n-predict", type=int, default=64)
    demo.add_argument("--n-draft", type=int, default=3)
    demo.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1)
    demo.set_defaults(func=_cmd_demo)
    bench = sub.add_parser(
        "bench",
        help="time our draft-mtp against the target alone, upstream's loop and HF assisted generation",
        description="Builds random-weight Gemma-4 pairs (cached), times every contender on each shape and "
        "acceptance regime in one run, and writes DATE-DEVICE-mtp-bench.json (+ .png) to --out-dir.",
    )
    bench.add_argument("--cpu", action="store_true", help="the harness check: tiny shapes on the CPU, in a minute")
    bench.add_argument(
        "--shape",
        action="append",
        help="e2b (GPU default), tiny (CPU default), e2b-q4, e2b-ple, e4b, 26b-a4b, 31b (and each -q4); repeatable",
    )
    bench.add_argument(
        "--regime", action="append", choices=["agree", "random", "mixed", "drifting"], help="default: all four"
    )
    bench.add_argument("-k", action="append", type=int, help="draft lengths to run (default 1 and 3); repeatable")
    bench.add_argument(
        "--upstream", help="upstream's llama-speculative-simple from the same tree ($PYLLAMA_MTP_UPSTREAM_BIN)"
    )
    bench.add_argument(
        "--upstream-server",
        help="upstream's llama-server from the same tree ($PYLLAMA_MTP_UPSTREAM_SERVER), as it ships and with -bs",
    )
    bench.add_argument(
        "--rpc", type=_csv(str), default=(), help="RPC servers host:port,...: also time the target split across them"
    )
    bench.add_argument(
        "--devices",
        type=_csv(str),
        default=(),
        help="split the target by layer across these local devices (CUDA1,CUDA0), the drafter on the last",
    )
    bench.add_argument("--exact", action="store_true", help="also time our rows with --exact (ours-exact-*)")
    bench.add_argument("--no-hf", action="store_true", help="skip Hugging Face generate")
    bench.add_argument("-n", "--n-predict", type=int, default=0, help="tokens per generation (128 GPU, 32 CPU)")
    bench.add_argument("--repeats", type=int, default=1, help="passes over the prompts per contender")
    bench.add_argument("--mixed-acceptance", type=float, default=0.6, help="the mixed regime's target acceptance")
    bench.add_argument("-o", "--out-dir", default="bench/results")
    bench.add_argument("--no-plot", action="store_true")
    bench.add_argument("--commit", help="our commit, where git cannot tell (a copied tree)")
    bench.add_argument("--table", metavar="JSON", help="print a result file as a Markdown table and exit")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # the command, for result files
    from .errors import PyllamaMtpError

    try:
        return int(args.func(args))
    except PyllamaMtpError as exc:
        print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
        return 1
