"""The mixed regime's acceptance, ours and upstream's, over many seeds against the chain model.

The harness samples with one seed per pass, so a cell's acceptance is one draw from a wide
distribution (the chain's sampled paths are short and correlated). This runs both loops over
``--seeds`` seeds at the harness's mixed temperature and sets their spread beside the exact
expectation of `pyllama_mtp.benchmark.acceptance` (the agreeing pair as a Markov chain; the
vocabulary-squared table needs a small vocabulary, so the tiny shape on the CPU):

    python3 bench/acceptance_seeds.py --upstream PATH/llama-speculative-simple --commit C --out F
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from pyllama_mtp import Model
from pyllama_mtp.benchmark import contenders, shapes
from pyllama_mtp.benchmark.acceptance import Chain, simulate, transition_logits
from pyllama_mtp.benchmark.harness import git_commit


def spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values), "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="upstream's llama-speculative-simple")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n-predict", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the prompts per seed (the harness: 3)")
    parser.add_argument("--commit")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    pair = shapes.build("tiny", "mixed", "cpu")
    with Model(pair.target_gguf, n_gpu_layers=0) as target, Model(pair.drafter_gguf, n_gpu_layers=0) as drafter:
        temperature = shapes.calibrate_temperature(target, 0.6)
        chain = Chain.from_logits(
            transition_logits(target), temperature, [t for t in range(target.n_vocab) if target.is_eog(t)]
        )
        starts = [target.tokenize(text)[-1] for text in contenders.PROMPTS] * args.repeats
        result: dict[str, Any] = {
            "commit": args.commit or git_commit(),
            "shape": "tiny",
            "temperature": temperature,
            "n_predict": args.n_predict,
            "repeats": args.repeats,
            "seeds": args.seeds,
        }
        for k in (1, 3):
            ours, theirs = [], []
            for seed in range(1, args.seeds + 1):
                run = contenders.Run("tiny", "mixed", pair, temperature, args.n_predict, args.repeats, seed=seed)
                ours.append(contenders.ours(run, target, drafter, k)["acceptance"])
                theirs.append(contenders.upstream(run, args.upstream, k, n_gpu_layers=0)["acceptance"])
                print(f"k={k} seed {seed}: ours {ours[-1]:.3f} upstream {theirs[-1]:.3f}", flush=True)
            model = simulate(chain, starts, k, args.n_predict, trials=4000)
            result[f"k{k}"] = {
                "ours": spread(ours),
                "upstream": spread(theirs),
                "chain_model": {"mean": float(model.mean()), "sd": float(model.std())},
            }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for k in (1, 3):
        cell = result[f"k{k}"]
        print(
            f"k={k}: chain model {cell['chain_model']['mean']:.3f} ± {cell['chain_model']['sd']:.3f} per run; "
            f"ours {cell['ours']['mean']:.3f} ± {cell['ours']['sd']:.3f}, "
            f"upstream {cell['upstream']['mean']:.3f} ± {cell['upstream']['sd']:.3f} over {args.seeds} seeds"
        )


if __name__ == "__main__":
    main()
