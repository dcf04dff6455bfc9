"""Random-weight ONNX graphs of the pyannote segmentation-3.0 shape, built with ``onnx.helper``.

They are what the segmentation tests and benchmark feed both to onnxruntime (the reference) and,
through :mod:`pyllama_mtp.convert_segmentation`, to our ggml graph:

- :func:`lstm_stack`: waveform-free, features ``[T, 1, input]`` -> a stack of bidirectional ONNX
  LSTMs (gates packed I, O, F, C) -> ``[T, 1, 2 * hidden]``; with ``layers=1`` a single BiLSTM.
- :func:`pyannet`: the whole network (SincNet front-end, 4 BiLSTMs of 128, two linear layers,
  a 7-class classifier, log-softmax) on a ``[1, 1, samples]`` waveform.

``lstm_stack`` models carry no front-end; :func:`wrap_features` gives them one that is the
identity on a ``[features, T]`` input so the same converter and runtime path serve both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 10 * SAMPLE_RATE


@dataclass(frozen=True)
class PyanNetShape:
    """segmentation-3.0's hyper-parameters (pyannote.audio's PyanNet defaults for that model)."""

    sinc_filters: int = 80
    sinc_kernel: int = 251
    sinc_stride: int = 10
    conv_channels: int = 60
    conv_kernel: int = 5
    pool: int = 3
    lstm_hidden: int = 128
    lstm_layers: int = 4
    linear: tuple[int, ...] = (128, 128)
    classes: int = 7


def _sinc_filters(n: int, kernel: int, rng: np.random.Generator) -> np.ndarray:
    """Band-pass sinc filters at random bands, as SincNet's parametrised first layer computes them."""
    t = (np.arange(kernel) - (kernel - 1) / 2) / SAMPLE_RATE
    window = np.hamming(kernel)
    low = np.sort(rng.uniform(50, 6000, n))
    band = rng.uniform(50, 1500, n)
    filters = []
    for lo, bw in zip(low, band, strict=True):
        hi = min(lo + bw, SAMPLE_RATE / 2 - 1)
        f = 2 * hi * np.sinc(2 * hi * t) - 2 * lo * np.sinc(2 * lo * t)
        filters.append(window * f / np.abs(f).max())
    return np.asarray(filters, dtype=np.float32)[:, None, :]  # [n, 1, kernel]


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def uniform(self, shape: tuple[int, ...], scale: float) -> np.ndarray:
        return self.rng.uniform(-scale, scale, shape).astype(np.float32)

    def bilstm(self, x: str, n_in: int, hidden: int, gain: float, torch_style: bool = False) -> str:
        """x [T, 1, n_in] -> [T, 1, 2 * hidden] (ONNX LSTM, bidirectional, gates I, O, F, C).

        ``torch_style``: zero initial states computed from the input's shape, as torch exports them.
        """
        from onnx import helper

        s = gain / np.sqrt(hidden)
        w = self.const("W", self.uniform((2, 4 * hidden, n_in), s))
        r = self.const("R", self.uniform((2, 4 * hidden, hidden), s))
        b = self.const("B", self.uniform((2, 8 * hidden), s))
        inputs = [x, w, r, b]
        if torch_style:
            batch = self.op("Gather", [self.op("Shape", [x]), self.const("one", np.array([1], dtype=np.int64))])
            dims = self.op("Concat", [self.const("two", np.array([2], np.int64)), batch,
                                      self.const("h", np.array([hidden], np.int64))], axis=0)  # fmt: skip
            zeros = self.op("ConstantOfShape", [dims])
            inputs += ["", zeros, zeros]
        y = self.name("lstm_y")
        self.nodes.append(
            helper.make_node("LSTM", inputs, [y], hidden_size=hidden, direction="bidirectional")
        )  # y [T, 2, 1, H]
        y = self.op("Transpose", [y], perm=[0, 2, 1, 3])  # [T, 1, 2, H]
        return self.op("Reshape", [y, self.const("shape", np.array([0, 0, 2 * hidden], dtype=np.int64))])

    def model(self, inputs: list[Any], output: str, out_shape: list[Any]) -> Any:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes,
            "pyannote-seg",
            inputs,
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m


def lstm_stack(layers: int = 1, n_in: int = 60, hidden: int = 128, seed: int = 0, gain: float = 2.0) -> Any:
    """ONNX model: ``features [T, 1, n_in]`` -> ``y [T, 1, 2 * hidden]``, ``layers`` BiLSTMs deep."""
    from onnx import TensorProto, helper

    g = _Graph(seed)
    x = "features"
    width = n_in
    for _ in range(layers):
        x = g.bilstm(x, width, hidden, gain)
        width = 2 * hidden
    x = g.op("Identity", [x])
    inp = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["T", 1, n_in])
    return g.model([inp], x, ["T", 1, width])


def pyannet(shape: PyanNetShape = PyanNetShape(), seed: int = 0, gain: float = 2.0, torch_style: bool = False) -> Any:
    """ONNX model of the whole segmentation network: ``waveform [batch, 1, samples]`` -> ``[batch, frames, classes]``.

    ``torch_style`` builds the same network the way ``torch.onnx.export`` writes pyannote's: the
    sinc filters computed from parameters (here: raw filters times a window), the filterbank
    conv inside an ``If`` on the input's rank, a norm's parameters behind ``Identity`` nodes and
    zero LSTM states computed from the input's shape. Same function, same outputs.
    """
    from onnx import TensorProto, helper

    g = _Graph(seed)

    def affine(c: int) -> tuple[str, str]:
        return g.const("scale", 1 + g.uniform((c,), 0.2)), g.const("bias", g.uniform((c,), 0.2))

    x = g.op("InstanceNormalization", ["waveform", *affine(1)], epsilon=1e-5)
    channels = 1
    blocks = [
        (_sinc_filters(shape.sinc_filters, shape.sinc_kernel, g.rng), None, shape.sinc_stride),
        (
            g.uniform(
                (shape.conv_channels, shape.sinc_filters, shape.conv_kernel), 1 / np.sqrt(shape.sinc_filters * 5)
            ),
            g.uniform((shape.conv_channels,), 0.1),
            1,
        ),
        (
            g.uniform(
                (shape.conv_channels, shape.conv_channels, shape.conv_kernel), 1 / np.sqrt(shape.conv_channels * 5)
            ),
            g.uniform((shape.conv_channels,), 0.1),
            1,
        ),
    ]
    for i, (w, b, stride) in enumerate(blocks):
        if torch_style and i == 0:
            window = np.hamming(w.shape[-1]).astype(np.float32)
            raw = w / np.where(window == 0, 1, window)
            weight = g.op("Mul", [g.const("raw_filters", raw), g.const("window", window)])
            rank3 = g.op("Equal", [g.op("Size", [g.op("Shape", [x])]), g.const("three", np.array(3, np.int64))])
            conv_out = g.name("conv_in_branch")
            branch = helper.make_graph(
                [helper.make_node("Conv", [x, weight], [conv_out], strides=[stride])], g.name("branch"), [],
                [helper.make_tensor_value_info(conv_out, TensorProto.FLOAT, None)],
            )  # fmt: skip
            x = g.name("if")
            g.nodes.append(helper.make_node("If", [rank3], [x], then_branch=branch, else_branch=branch))
        else:
            inputs = [x, g.const("conv_w", w)] + ([g.const("conv_b", b)] if b is not None else [])
            x = g.op("Conv", inputs, strides=[stride])
        if i == 0:
            x = g.op("Abs", [x])
        x = g.op("MaxPool", [x], kernel_shape=[shape.pool], strides=[shape.pool])
        channels = w.shape[0]
        scale, bias = affine(channels)
        if torch_style and i == len(blocks) - 1:
            scale, bias = g.op("Identity", [scale]), g.op("Identity", [bias])
        x = g.op("InstanceNormalization", [x, scale, bias], epsilon=1e-5)
        x = g.op("LeakyRelu", [x], alpha=0.01)
    x = g.op("Transpose", [x], perm=[2, 0, 1])  # [1, C, T] -> [T, 1, C]
    width = channels
    for _ in range(shape.lstm_layers):
        x = g.bilstm(x, width, shape.lstm_hidden, gain, torch_style)
        width = 2 * shape.lstm_hidden
    x = g.op("Transpose", [x], perm=[1, 0, 2])  # [1, T, 2H]
    for i, n_out in enumerate((*shape.linear, shape.classes)):
        # as torch.onnx.export writes nn.Linear on a 3-D input: MatMul by W^T, then Add
        w = g.uniform((width, n_out), gain / np.sqrt(width))
        x = g.op("Add", [g.op("MatMul", [x, g.const("lin_w", w)]), g.const("lin_b", g.uniform((n_out,), 0.1))])
        if i < len(shape.linear):
            x = g.op("LeakyRelu", [x], alpha=0.01)
        width = n_out
    x = g.op("LogSoftmax", [x], axis=-1)
    inp = helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", 1, "samples"])
    return g.model([inp], x, ["batch", "frames", shape.classes])


def onnx_session(
    model: Any, providers: tuple[str, ...] = ("CPUExecutionProvider",)
) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` loaded in onnxruntime (the reference, never our code): a function of its one input."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=list(providers))
    name = sess.get_inputs()[0].name
    return lambda feed: np.asarray(sess.run(None, {name: feed})[0])


def onnx_run(model: Any, feed: np.ndarray) -> np.ndarray:
    """Run ``model`` once on ``feed`` with onnxruntime on the CPU."""
    return onnx_session(model)(feed)
