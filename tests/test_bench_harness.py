"""The benchmark harness itself (its CPU mode): the speed-up model, the schema, the regimes and the
outputs. Speed is not asserted here; bench results are (bench/results/)."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from pyllama_mtp import benchmark
from pyllama_mtp.benchmark import report
from pyllama_mtp.cli import main as cli_main


def test_ideal_speedup_limits() -> None:
    # no acceptance: one token per step, paid 1 + k c
    assert report.ideal_speedup(0.0, 3, 0.1) == pytest.approx(1 / 1.3)
    # full acceptance: k + 1 tokens per step
    assert report.ideal_speedup(1.0, 3, 0.0) == pytest.approx(4.0)
    assert report.ideal_speedup(1.0, 3, 0.05) == pytest.approx(4 / 1.15)
    # 1 + a + a^2 + a^3 tokens per step
    assert report.ideal_speedup(0.5, 3, 0.0) == pytest.approx(1.875)
    # continuous at a -> 1
    assert report.ideal_speedup(1 - 1e-9, 3, 0.02) == pytest.approx(report.ideal_speedup(1.0, 3, 0.02), rel=1e-6)
    assert report.ideal_speedup(0.7, 0, 0.5) == 1.0


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.6, 0.95, 1.0])
def test_alpha_inverts_block_acceptance(alpha: float, k: int) -> None:
    acceptance = sum(alpha**i for i in range(1, k + 1)) / k
    assert report.alpha_from_acceptance(acceptance, k) == pytest.approx(alpha, abs=1e-9)


@pytest.fixture(scope="module")
def cpu_result() -> dict[str, Any]:
    upstream = os.environ.get("PYLLAMA_MTP_UPSTREAM_BIN")
    server = os.environ.get("PYLLAMA_MTP_UPSTREAM_SERVER")
    opts = benchmark.Options(
        mode="cpu",
        upstream=Path(upstream) if upstream else None,
        upstream_server=Path(server) if server else None,
        n_predict=24,
        log=lambda _msg: None,
    )
    return benchmark.run(opts)


def _row(result: dict[str, Any], name: str, regime: str) -> dict[str, Any]:
    return next(r for r in result["rows"] if r["name"] == name and r["regime"] == regime)


def test_cpu_mode_runs_every_contender_and_regime(cpu_result: dict[str, Any]) -> None:
    benchmark.validate(cpu_result)
    assert cpu_result["mode"] == "cpu" and list(cpu_result["shapes"]) == ["tiny"]
    names = {(r["name"], r["regime"]) for r in cpu_result["rows"]}
    for regime in ("agree", "random", "mixed", "drifting"):
        for name in (
            "ours-baseline",
            "ours-draft-mtp-k1",
            "ours-draft-mtp-k3",
            "ours-draft-mtp-k3-async",
            "ours-draft-mtp-auto",
        ):
            assert (name, regime) in names
    for regime in ("agree", "random"):  # HF runs greedy only
        assert ("hf-baseline", regime) in names and ("hf-assisted-k3", regime) in names
    assert ("hf-assisted-k3", "mixed") not in names
    if os.environ.get("PYLLAMA_MTP_UPSTREAM_BIN"):
        assert ("upstream-draft-mtp-k3", "agree") in names
        assert ("upstream-draft-mtp-k3", "drifting") not in names  # it cannot switch sampling mid-generation
    if os.environ.get("PYLLAMA_MTP_UPSTREAM_SERVER"):
        for regime in ("agree", "random", "mixed", "drifting"):
            for k in (0, 1, 3):
                assert (f"upstream-server-k{k}", regime) in names and (f"upstream-server-bs-k{k}", regime) in names


def test_regimes_give_the_acceptance_they_promise(cpu_result: dict[str, Any]) -> None:
    assert _row(cpu_result, "ours-draft-mtp-k3", "agree")["acceptance"] > 0.95
    assert _row(cpu_result, "ours-draft-mtp-k3", "random")["acceptance"] < 0.1
    assert cpu_result["regimes"]["mixed"]["temperature"] > 0
    # sampled runs are noisier: three passes over the prompts, each on its own random path
    assert cpu_result["regimes"]["mixed"]["repeats"] == 3 and cpu_result["regimes"]["agree"]["repeats"] == 1
    mixed_k3 = _row(cpu_result, "ours-draft-mtp-k3", "mixed")
    assert mixed_k3["tokens"] > 2 * _row(cpu_result, "ours-draft-mtp-k3", "agree")["tokens"]
    # the mixed regime is calibrated to a per-position acceptance of 0.6; 24 tokens x 3 prompts
    # leave sampling noise, and k=1 and k=3 must agree on alpha since positions are i.i.d.
    a1 = _row(cpu_result, "ours-draft-mtp-k1", "mixed")["alpha"]
    a3 = _row(cpu_result, "ours-draft-mtp-k3", "mixed")["alpha"]
    assert 0.35 < a1 < 0.85 and 0.35 < a3 < 0.85
    assert abs(a1 - a3) < 0.25


def test_the_drifting_regime_switches_inside_each_generation(cpu_result: dict[str, Any]) -> None:
    spans = cpu_result["regimes"]["drifting"]["spans"]
    assert [t > 0 for _, t in spans] == [False, True, False, True]
    assert sum(n for n, _ in spans) == cpu_result["n_predict"]
    # half greedy (every draft right), half hot (nearly every draft wrong): in between
    acc = _row(cpu_result, "ours-draft-mtp-k3", "drifting")["acceptance"]
    assert _row(cpu_result, "ours-draft-mtp-k3", "random")["acceptance"] < acc < 0.95
    assert acc > 0.2
    if os.environ.get("PYLLAMA_MTP_UPSTREAM_SERVER"):
        server = _row(cpu_result, "upstream-server-bs-k3", "drifting")
        assert abs(server["acceptance"] - acc) < 0.25


def test_model_fields_follow_the_measurements(cpu_result: dict[str, Any]) -> None:
    for row in cpu_result["rows"]:
        if row["name"] == "ours-draft-mtp-auto":  # its k varies by step: no model fields
            assert row["alpha"] is None and row["ideal_speedup"] is None
        elif row["contender"] == "ours" and row["k"] > 0:
            assert row["draft_step_ms"] > 0
            assert row["verify_step_ms"] > 0
            base = _row(cpu_result, "ours-baseline", row["regime"])
            assert row["speedup"] == pytest.approx(row["tokens_per_s"] / base["tokens_per_s"])
            c = row["draft_step_ms"] * base["tokens_per_s"] / 1e3
            assert row["c"] == pytest.approx(c)
            assert row["ideal_speedup"] == pytest.approx(report.ideal_speedup(row["alpha"], row["k"], c))
            assert row["efficiency"] == pytest.approx(row["speedup"] / row["ideal_speedup"])
    summary = cpu_result["summary"]
    k3 = _row(cpu_result, "ours-draft-mtp-k3", "agree")
    hf = _row(cpu_result, "hf-assisted-k3", "agree")
    assert summary["ours_over_hf"] == pytest.approx(k3["tokens_per_s"] / hf["tokens_per_s"])
    assert summary["efficiency_high_acceptance"] == pytest.approx(k3["efficiency"])
    assert summary["draft_step_ms"] == pytest.approx(k3["draft_step_ms"])
    k3_async = _row(cpu_result, "ours-draft-mtp-k3-async", "agree")
    assert summary["async_over_sync_high_acceptance"] == pytest.approx(k3_async["tokens_per_s"] / k3["tokens_per_s"])
    # the pipelines differ in speed only: the same seeds give the same tokens and acceptance
    for regime in ("agree", "random", "mixed"):
        for k in (1, 3):
            sync, pipelined = (_row(cpu_result, f"ours-draft-mtp-k{k}{s}", regime) for s in ("", "-async"))
            assert (pipelined["acceptance"], pipelined["tokens"]) == (sync["acceptance"], sync["tokens"])
    assert all(math.isfinite(v) for v in (summary["c"], summary["target_step_ms"]))
    assert summary["verify4_over_step"] == pytest.approx(k3["verify_step_ms"] / summary["target_step_ms"])
    assert summary["target_step_ms_q4km"] is None  # no e2b-q4 shape in this run
    for regime in ("agree", "random", "mixed"):
        auto = _row(cpu_result, "ours-draft-mtp-auto", regime)["tokens_per_s"]
        alone = _row(cpu_result, "ours-baseline", regime)["tokens_per_s"]
        fixed_k = ("ours-baseline", "ours-draft-mtp-k1", "ours-draft-mtp-k3")
        fixed = [_row(cpu_result, n, regime)["tokens_per_s"] for n in fixed_k]
        assert summary["auto_over_target_alone"][regime] == pytest.approx(auto / alone)
        assert summary["auto_over_best_fixed_k"][regime] == pytest.approx(auto / max(fixed))
    upstream_k3 = [
        r for r in cpu_result["rows"] if r["contender"] == "upstream" and r["k"] == 3 and r["regime"] == "agree"
    ]
    if upstream_k3:  # over upstream's best row at the same k, named in the summary
        best = max(upstream_k3, key=lambda r: r["tokens_per_s"])
        assert summary["upstream_best_high_acceptance"] == best["name"]
        assert summary["ours_over_upstream_high_acceptance"] == pytest.approx(k3["tokens_per_s"] / best["tokens_per_s"])


def test_summary_takes_the_q4km_target_and_the_4_token_verify_from_their_rows() -> None:
    def row(name: str, shape: str, tokens_per_s: float, verify_step_ms: float | None = None) -> dict[str, Any]:
        k = 3 if name.endswith("k3") else 0
        return {"name": name, "contender": "ours", "shape": shape, "regime": "agree", "k": k,
                "tokens_per_s": tokens_per_s, "ttft_ms": 1.0, "acceptance": 1.0 if k else None,
                "draft_step_ms": 0.1 if k else None, "verify_step_ms": verify_step_ms}  # fmt: skip

    rows = [
        row("ours-baseline", "e2b", 250.0),  # 4 ms a token
        row("ours-draft-mtp-k3", "e2b", 600.0, verify_step_ms=5.0),
        row("ours-baseline", "e2b-q4", 400.0),  # 2.5 ms a token
    ]
    report.fill_model(rows)
    summary = report.summarize(rows, "e2b")
    assert summary["target_step_ms"] == pytest.approx(4.0)
    assert summary["verify4_over_step"] == pytest.approx(1.25)
    assert summary["target_step_ms_q4km"] == pytest.approx(2.5)
    assert report.summarize(rows[:1], "e2b")["verify4_over_step"] is None


def test_validate_refuses_broken_results(cpu_result: dict[str, Any]) -> None:
    for breakage in ("drop_key", "bad_acceptance", "bad_rate", "unknown_shape", "schema"):
        broken = copy.deepcopy(cpu_result)
        if breakage == "drop_key":
            del broken["rows"][0]["ttft_ms"]
        elif breakage == "bad_acceptance":
            broken["rows"][1]["acceptance"] = 1.5
        elif breakage == "bad_rate":
            broken["rows"][0]["tokens_per_s"] = float("nan")
        elif breakage == "unknown_shape":
            broken["rows"][0]["shape"] = "e9000b"
        else:
            broken["schema"] = 0
        with pytest.raises(ValueError):
            benchmark.validate(broken)


def test_outputs_json_png_and_table(cpu_result: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    paths = benchmark.write(cpu_result, tmp_path)
    assert [p.suffix for p in paths] == [".json", ".png"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(cpu_result))
    assert cli_main(["bench", "--table", str(paths[0])]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + len(cpu_result["rows"])
    assert all(line.startswith("| tiny |") for line in table[2:])


def test_gpu_mode_without_a_gpu_backend_says_so(capsys: Any) -> None:
    from pyllama_mtp import build_info

    if any(b.lower() in ("cuda", "metal") for b in build_info().backends):
        pytest.skip("this build has a GPU backend")
    assert cli_main(["bench", "--no-hf"]) == 1
    assert "no GPU backend" in capsys.readouterr().err


def test_devices_place_every_row_of_ours() -> None:
    # (the CPU as the one listed device: the code path a two-GPU run takes with CUDA1,CUDA0)
    opts = benchmark.Options(
        mode="cpu", regimes=("agree",), ks=(1,), hf=False, n_predict=8, devices=("CPU",), log=lambda _m: None
    )
    result = benchmark.run(opts)
    benchmark.validate(result)
    assert result["devices"] == ["CPU"]
    names = {r["name"] for r in result["rows"]}
    assert {"ours-baseline", "ours-draft-mtp-k1", "ours-draft-mtp-auto"} <= names
    assert next(r for r in result["rows"] if r["name"] == "ours-draft-mtp-k1")["acceptance"] > 0.95
