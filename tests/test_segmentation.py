"""Speaker segmentation: our ggml graph against onnxruntime on pyannote-shaped ONNX models.

onnxruntime runs the ONNX graph (its own LSTM kernel, gates I, O, F, C by the ONNX spec); our
side runs the GGUF that ``convert_segmentation`` wrote from the same graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the reference runtime ([test] extra)")

from onnx import numpy_helper  # noqa: E402

from pyllama_mtp import ClosedError, InvalidAudioError, ModelLoadError  # noqa: E402
from pyllama_mtp import convert_segmentation as conv  # noqa: E402
from pyllama_mtp import seg_fixtures as sf  # noqa: E402
from pyllama_mtp.fixtures import Pair  # noqa: E402
from pyllama_mtp.segmentation import Segmenter, powerset_classes, to_speakers  # noqa: E402

TOL = 1e-4  # max abs error, f32, CPU and GPU
# Recurrent gain of the random networks. At 4 the network is chaotic in f32: one ulp of input
# moves onnxruntime's own output by 1e-4, so no implementation could be held to TOL; at 3 that
# sensitivity is 4e-6 (checked in the test, so the bound stays meaningful).
GAIN = 3.0
# Where the seed's evaluator read each gate: it took ONNX's blocks (I, O, F, C) as (I, F, G, O).
# A file whose blocks are permuted this way makes our I, O, F, C reader compute what it computed.
AS_IFGO = [0, 3, 1, 2]


def gguf_of(model: Any, path: Path) -> Path:
    return conv.convert(model, path)


def permute_gates(model: Any, order: list[int]) -> Any:
    """A copy of ``model`` with every LSTM's gate blocks (W, R and both halves of B) reordered."""
    out = type(model)()
    out.CopyFrom(model)
    lstm_inputs = {name for node in out.graph.node if node.op_type == "LSTM" for name in node.input[1:4]}
    for init in out.graph.initializer:
        if init.name in lstm_inputs:
            a = numpy_helper.to_array(init)
            blocks = a.reshape(a.shape[0], -1, 4, a.shape[1] // 4 if a.ndim == 3 else a.shape[1] // 8, *a.shape[2:])
            init.CopyFrom(
                numpy_helper.from_array(np.ascontiguousarray(blocks[:, :, order]).reshape(a.shape), init.name)
            )
    return out


def features(seed: int, t: int = 589, n: int = 60) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((t, n)).astype(np.float32)


def waveform(seed: int, amplitude: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # noise with a few tones and bursts, so the band-pass front-end sees structure
    t = np.arange(sf.WINDOW_SAMPLES) / sf.SAMPLE_RATE
    x = rng.standard_normal(t.size) * amplitude
    for f in rng.uniform(100, 4000, 3):
        x += amplitude * np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * rng.uniform(0.1, 1) * t) > 0)
    return x.astype(np.float32)


def lstm_pair(tmp_path: Path, layers: int, seed: int) -> tuple[Any, Path]:
    model = sf.lstm_stack(layers=layers, seed=seed)
    return model, gguf_of(model, tmp_path / f"lstm{layers}-{seed}.gguf")


# On the CPU the recurrence runs as one fused op by default, or as ggml ops per step (the GPU's way)
FUSED = [pytest.param(True, id="fused"), pytest.param(False, id="ggml-ops")]


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("layers", [1, 4])
def test_lstm_stack_matches_onnxruntime(tmp_path: Path, layers: int, fused: bool) -> None:
    model, path = lstm_pair(tmp_path, layers, seed=layers)
    x = features(seed=10 + layers)
    ref = sf.onnx_run(model, x[:, None, :])[:, 0, :]
    with Segmenter(path, fused_lstm=fused) as seg:
        # the graph is kept between calls: every call must see its own inputs again (the time
        # reversal indices were once set only when the graph was built, then overwritten)
        runs = [seg.segment(x) for _ in range(3)]
    assert runs[0].shape == ref.shape == (589, 256)
    assert np.abs(ref).max() > 0.3  # the reference is not trivially small
    for ours in runs:
        assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("seed", [0, 1])
def test_whole_network_matches_onnxruntime(tmp_path: Path, seed: int, fused: bool) -> None:
    model = sf.pyannet(seed=seed, gain=GAIN)
    wav = waveform(seed)
    ref = sf.onnx_run(model, wav[None, None, :])[0]
    one_ulp = np.nextafter(wav, np.float32(np.inf)).astype(np.float32)
    assert np.abs(sf.onnx_run(model, one_ulp[None, None, :])[0] - ref).max() < TOL / 10
    with Segmenter(gguf_of(model, tmp_path / "net.gguf"), fused_lstm=fused) as seg:
        assert seg.n_classes == 7 and seg.sample_rate == 16000
        assert seg.n_frames(wav.size) == 589
        ours = seg.segment(wav, sample_rate=16000)
    assert ours.shape == ref.shape == (589, 7)
    assert len(set(ref.argmax(1))) >= 3  # frames fall in several classes
    assert np.abs(ours - ref).max() <= TOL


def test_torch_export_structure_converts_to_the_same_model(tmp_path: Path) -> None:
    """Computed sinc filters, a conv inside If, Identity'd norms, computed zero LSTM states: the
    converter evaluates what the parameters determine, and the result equals the plain graph's."""
    plain, torch_like = sf.pyannet(seed=8, gain=GAIN), sf.pyannet(seed=8, gain=GAIN, torch_style=True)
    ops = {n.op_type for n in torch_like.graph.node}
    assert {"If", "ConstantOfShape", "Identity", "Mul"} <= ops
    wav = waveform(8)
    ref = sf.onnx_run(torch_like, wav[None, None, :])[0]
    assert np.abs(ref - sf.onnx_run(plain, wav[None, None, :])[0]).max() < 1e-5
    with Segmenter(gguf_of(torch_like, tmp_path / "torch.gguf")) as seg:
        assert np.abs(seg.segment(wav) - ref).max() <= TOL


def test_gates_read_as_ifgo_fail_parity_widely(tmp_path: Path) -> None:
    """The seed's bug, reproduced on purpose: the suite must see it, by orders of magnitude."""
    model, _ = lstm_pair(tmp_path, 1, seed=3)
    x = features(seed=4)
    ref = sf.onnx_run(model, x[:, None, :])[:, 0, :]
    with Segmenter(gguf_of(permute_gates(model, AS_IFGO), tmp_path / "ifgo.gguf")) as seg:
        wrong = seg.segment(x)
    assert np.abs(wrong - ref).max() > 1000 * TOL

    net = sf.pyannet(seed=5, gain=GAIN)
    wav = waveform(5)
    ref_net = sf.onnx_run(net, wav[None, None, :])[0]
    with Segmenter(gguf_of(permute_gates(net, AS_IFGO), tmp_path / "net-ifgo.gguf")) as seg:
        wrong_net = seg.segment(wav)
    assert np.abs(wrong_net - ref_net).max() > 1000 * TOL
    assert (wrong_net.argmax(1) != ref_net.argmax(1)).mean() > 0.05


def test_decision_boundary_frames_agree(tmp_path: Path) -> None:
    """Near-tied classes (a low-gain network), 100 windows: argmax and speaker count per frame."""
    model = sf.pyannet(seed=7, gain=2.0)
    wrong_model = permute_gates(model, AS_IFGO)
    n_frames = agree = agree_count = wrong_agree = 0
    margins = []
    reference = sf.onnx_session(model)
    with (
        Segmenter(gguf_of(model, tmp_path / "b.gguf")) as seg,
        Segmenter(gguf_of(wrong_model, tmp_path / "b-ifgo.gguf")) as wrong,
    ):
        for w in range(100):
            wav = waveform(100 + w, amplitude=0.02 + 0.002 * w)
            ref = reference(wav[None, None, :])[0]
            ours = seg.segment(wav)
            p = np.sort(np.exp(ref), axis=1)
            margins.append(p[:, -1] - p[:, -2])
            n_frames += len(ref)
            agree += int((ours.argmax(1) == ref.argmax(1)).sum())
            agree_count += int((to_speakers(ours).sum(1) == to_speakers(ref).sum(1)).sum())
            if w < 20:  # the negative control, on a fifth of the windows
                wrong_agree += int((wrong.segment(wav).argmax(1) == ref.argmax(1)).sum())
    assert np.median(np.concatenate(margins)) < 0.05  # these frames are near the boundary
    assert agree >= 0.999 * n_frames
    assert agree_count >= 0.999 * n_frames
    assert wrong_agree < 0.95 * n_frames / 5  # and there the gate order shows


def test_other_gate_orders_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conv, "GATE_ORDER", "ifgo")
    path = gguf_of(sf.lstm_stack(), tmp_path / "ifgo-declared.gguf")
    with pytest.raises(ModelLoadError, match="'ifgo'.*'iofc'"):
        Segmenter(path)


def test_wrong_files_raise(tmp_path: Path, pair: Pair) -> None:
    with pytest.raises(ModelLoadError, match="architecture is 'gemma4'"):
        Segmenter(pair.target_gguf)
    with pytest.raises(ModelLoadError, match="no such file"):
        Segmenter(tmp_path / "missing.gguf")
    path = gguf_of(sf.lstm_stack(), tmp_path / "ok.gguf")
    data = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cut.gguf"):
        Segmenter(tmp_path / "cut.gguf")


def test_bad_input_raises_and_the_segmenter_stays_usable(tmp_path: Path) -> None:
    model = sf.pyannet(seed=0)
    wav = waveform(0)
    with Segmenter(gguf_of(model, tmp_path / "net.gguf")) as seg:
        with pytest.raises(ValueError, match="no frame"):
            seg.segment(wav[:200])
        with pytest.raises(ValueError, match="8000 Hz"):
            seg.segment(wav, sample_rate=8000)
        with pytest.raises(ValueError, match="segment_long"):
            seg.segment(np.zeros(150 * sf.SAMPLE_RATE, dtype=np.float32))  # 150 s: 8,800+ frames
        bad = wav.copy()
        bad[5] = np.nan
        with pytest.raises(InvalidAudioError, match="NaN"):
            seg.segment(bad)
        with pytest.raises(InvalidAudioError, match="NaN"):
            seg.segment_long(np.concatenate([wav, bad]))
        with pytest.raises(InvalidAudioError, match="empty"):
            seg.segment_long(wav[:0])
        for batch_size in (0, 257):
            with pytest.raises(ValueError, match="batch_size"):
                seg.segment_long(wav, batch_size=batch_size)
        assert np.abs(seg.segment(wav) - sf.onnx_run(model, wav[None, None, :])[0]).max() <= TOL
    with pytest.raises(ClosedError):
        seg.segment(wav)


@pytest.mark.parametrize("fused_lstm", [True, False], ids=["fused", "ggml-ops"])
def test_nonfinite_samples_are_found_where_they_are_summed(tmp_path: Path, fused_lstm: bool) -> None:
    # the library's check: the fused CPU path flags a window whose norm sums to NaN or infinity,
    # every other graph (the GPU's) sums the batch's samples; an overflowing sum of finite samples
    # is checked sample by sample and is not an error
    model = sf.pyannet(seed=0)
    wav = waveform(0)
    with Segmenter(gguf_of(model, tmp_path / "net.gguf"), fused_lstm=fused_lstm) as seg:
        good = seg.segment(wav)
        for value, where in ((np.nan, 0), (np.inf, len(wav) // 2), (-np.inf, len(wav) - 1)):
            bad = wav.copy()
            bad[where] = value
            with pytest.raises(InvalidAudioError, match="NaN or infinite"):
                seg.segment(bad)
            # a batch of three windows, the bad sample in the last one only
            with pytest.raises(InvalidAudioError, match="NaN or infinite"):
                seg.segment_long(np.concatenate([wav, wav, bad]), window_s=10.0, step_s=10.0, batch_size=3)
        huge = np.full_like(wav, 1e37)  # their float sum overflows
        seg.segment(huge)  # finite samples, whatever the network makes of them
        assert np.array_equal(seg.segment(wav), good)


def test_converter_refuses_what_it_cannot_represent(tmp_path: Path) -> None:
    model = sf.lstm_stack()
    for node in model.graph.node:
        if node.op_type == "LSTM":
            for a in node.attribute:
                if a.name == "direction":
                    a.s = b"forward"
    out = tmp_path / "x.gguf"
    with pytest.raises(conv.ConversionError, match="bidirectional"):
        conv.convert(model, out)
    assert not out.exists() and not list(tmp_path.iterdir())

    # an initial LSTM state computed from the input's values (not only its shape) is refused
    from onnx import helper

    model = sf.lstm_stack()
    graph = model.graph
    for name, value in (("s0", [0]), ("s1", [2]), ("s2", [0])):
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    graph.initializer.append(numpy_helper.from_array(np.ones((60, 128), np.float32), "proj"))
    graph.node.insert(0, helper.make_node("Slice", ["features", "s0", "s1", "s2"], ["h0_in"]))
    graph.node.insert(1, helper.make_node("MatMul", ["h0_in", "proj"], ["h0"]))  # [2, 1, 128]
    next(n for n in graph.node if n.op_type == "LSTM").input.extend(["", "h0", ""])
    with pytest.raises(conv.ConversionError, match="'h0' depends on the input"):
        conv.convert(model, out)


def test_powerset_and_speakers() -> None:
    assert powerset_classes() == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
    lp = np.log(np.full((3, 7), 0.01, dtype=np.float32))
    lp[0, 0] = lp[1, 4] = lp[2, 3] = 0.0  # silence, speakers 0+1, speaker 2
    assert to_speakers(lp).tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError):
        to_speakers(lp[:, :5])


def test_sliding_windows_cover_long_audio(tmp_path: Path) -> None:
    model = sf.pyannet(seed=1)
    audio = np.concatenate([waveform(1), waveform(2)[: sf.SAMPLE_RATE * 3]])  # 13 s
    seen: list[tuple[int, int]] = []
    # on the CPU: its fused ops give a window the same bits in any batch (cuBLAS's products may not)
    with Segmenter(gguf_of(model, tmp_path / "net.gguf"), use_gpu=False) as seg:
        win = seg.segment_long(
            audio, window_s=10.0, step_s=2.0, batch_size=2, progress=lambda d, n: seen.append((d, n))
        )
        # the batches read overlapping windows out of the recording in place: each must be the
        # window run on its own, the last one's tail as zeros
        padded = np.zeros(4 * sf.SAMPLE_RATE + sf.WINDOW_SAMPLES, dtype=np.float32)
        padded[: audio.size] = audio
        alone = [seg.segment(padded[s * sf.SAMPLE_RATE :][: sf.WINDOW_SAMPLES]) for s in (0, 2, 4)]
        with pytest.raises(ValueError, match="empty"):
            seg.segment_long(np.zeros(0, dtype=np.float32))
    assert win.log_probs.shape == (3, 589, 7)  # starts 0, 2, 4 s; the last one zero-padded
    assert win.starts.tolist() == [0.0, 2.0, 4.0]
    assert seen == [(2, 3), (3, 3)]  # after each batch
    for got, want in zip(win.log_probs, alone, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fused", FUSED)
def test_a_window_gives_the_same_result_in_any_batch(tmp_path: Path, fused: bool) -> None:
    # windows batched into one graph: each must match its own run and onnxruntime; the fused CPU
    # kernels sum every output in a fixed order, so there they must match bit for bit. The fused
    # ops are the CPU's: unfused runs the graph of ggml ops, on the GPU of a GPU build (whose
    # products, cuBLAS's, may sum in another order at another batch size)
    model = sf.pyannet(seed=2, gain=GAIN)
    audio = np.concatenate([waveform(s) for s in range(3, 10)])[: sf.WINDOW_SAMPLES * 7 - 12345]
    with Segmenter(gguf_of(model, tmp_path / "net.gguf"), fused_lstm=fused, use_gpu=not fused) as seg:
        one = seg.segment_long(audio, step_s=7.0, batch_size=1).log_probs
        # up to 8 windows share a pass over the LSTM's weights on an AVX-512 CPU, 4 elsewhere
        for batch_size in (2, 3, 6, 8, 10):
            batched = seg.segment_long(audio, step_s=7.0, batch_size=batch_size).log_probs
            assert batched.shape == one.shape == (10, 589, 7)
            if fused:
                np.testing.assert_array_equal(batched, one)
            else:
                assert np.abs(batched - one).max() <= TOL / 10
    chunk = np.zeros(sf.WINDOW_SAMPLES, dtype=np.float32)
    for i in range(one.shape[0]):
        piece = audio[i * 7 * sf.SAMPLE_RATE :][: sf.WINDOW_SAMPLES]
        chunk[:] = 0
        chunk[: piece.size] = piece
        assert np.abs(one[i] - sf.onnx_run(model, chunk[None, None, :])[0]).max() <= TOL


def test_the_cpu_result_does_not_depend_on_the_threads(tmp_path: Path) -> None:
    # the fused CPU ops split their work by window, by direction and group of windows, or (with
    # fewer windows than threads) by slices of one window; every output still sums in one order
    model = sf.pyannet(seed=5, gain=GAIN)
    audio = np.concatenate([waveform(s) for s in range(8, 11)])
    path = gguf_of(model, tmp_path / "net.gguf")
    runs = []
    for n_threads in (1, 2, 3):
        with Segmenter(path, use_gpu=False, n_threads=n_threads) as seg:
            runs.append((seg.segment(audio[: sf.WINDOW_SAMPLES]), seg.segment_long(audio, step_s=4.0, batch_size=5)))
    for single, batched in runs[1:]:
        np.testing.assert_array_equal(single, runs[0][0])
        np.testing.assert_array_equal(batched.log_probs, runs[0][1].log_probs)


@pytest.mark.parametrize("fused", FUSED)
def test_sizes_off_the_vector_width_match_onnxruntime(tmp_path: Path, fused: bool) -> None:
    # the CPU kernels work in blocks of 16 rows: hidden 20 (80 gate rows), 24 filters of 31 taps
    # and a pool of 5 leave remainders everywhere
    shape = sf.PyanNetShape(sinc_filters=24, sinc_kernel=31, conv_channels=12, pool=5, lstm_hidden=20, lstm_layers=2)
    model = sf.pyannet(shape, seed=4, gain=GAIN)
    wav = waveform(4)
    ref = sf.onnx_run(model, wav[None, None, :])[0]
    with Segmenter(gguf_of(model, tmp_path / "odd.gguf"), fused_lstm=fused) as seg:
        ours = seg.segment(wav)
        batched = seg.segment_long(np.concatenate([wav, wav[::-1]]), step_s=10.0, batch_size=2).log_probs
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOL
    assert np.abs(batched[0] - ref).max() <= TOL
    assert np.abs(batched[1] - sf.onnx_run(model, wav[::-1].copy()[None, None, :])[0]).max() <= TOL


def test_cli_segments_a_wav_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import wave

    from pyllama_mtp.cli import main

    path = gguf_of(sf.pyannet(seed=1), tmp_path / "net.gguf")
    audio = np.concatenate([waveform(1), waveform(2)])  # 20 s
    for name, rate in (("ok.wav", 16000), ("8k.wav", 8000)):
        with wave.open(str(tmp_path / name), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
            w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    out = tmp_path / "lp.npy"
    assert main(["segment", "-m", str(path), str(tmp_path / "ok.wav"), "--step", "5", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "start_s" and [float(x.split()[0]) for x in lines[1:4]] == [0.0, 5.0, 10.0]
    assert all(sum(map(int, x.split()[2:])) == 589 for x in lines[1:4])  # every frame counted once
    assert np.load(out).shape == (3, 589, 7)
    one_by_one = tmp_path / "lp1.npy"
    assert (
        main(["segment", "-m", str(path), str(tmp_path / "ok.wav"), "--step", "5", "-b", "1", "-o", str(one_by_one)])
        == 0
    )
    assert np.abs(np.load(one_by_one) - np.load(out)).max() <= TOL / 10  # bitwise on the CPU's fused path
    assert main(["segment", "-m", str(path), str(tmp_path / "8k.wav")]) == 1
    assert "8000 Hz" in capsys.readouterr().err
    assert main(["segment", "-m", str(path), str(tmp_path / "ok.wav"), "-b", "0"]) == 1
    assert "batch_size" in capsys.readouterr().err


def test_cli_convert_segmentation_writes_the_same_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    from pyllama_mtp.cli import main

    model = sf.pyannet(seed=1)
    onnx.save(model, str(tmp_path / "net.onnx"))
    out = tmp_path / "net.gguf"
    assert main(["convert-segmentation", str(tmp_path / "net.onnx"), str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes() == gguf_of(model, tmp_path / "api.gguf").read_bytes()
    assert main(["convert-segmentation", str(tmp_path / "missing.onnx"), str(tmp_path / "x.gguf")]) == 1
    assert "pyllama-mtp: error:" in capsys.readouterr().err
    assert not (tmp_path / "x.gguf").exists()
