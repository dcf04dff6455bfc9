"""Convert a pyannote segmentation ONNX graph (segmentation-3.0 / PyanNet shape) to GGUF.

    pyllama-mtp convert-segmentation model.onnx out.gguf [--sample-rate 16000]

The weights are read by initializer from the nodes that use them, in graph order:
InstanceNormalization (the first normalises the waveform), Conv + MaxPool + InstanceNormalization
+ LeakyRelu blocks (an Abs after the first conv: SincNet), LSTM nodes (bidirectional), then
MatMul/Gemm + Add linear layers; the last linear layer before LogSoftmax is the classifier.
LSTM weights are written exactly as ONNX packs them (W ``[dirs, 4H, in]``, R ``[dirs, 4H, H]``,
B ``[dirs, 8H]``, gates I, O, F, C) and the file says so: ``pyannote-seg.lstm.gate_order = "iofc"``.
A graph without Conv nodes is an LSTM stack on feature frames (what the LSTM-only tests use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .convert import import_gguf
from .errors import ConversionError

ARCH = "pyannote-seg"
GATE_ORDER = "iofc"


@dataclass
class _Net:
    wav_norm: tuple[np.ndarray, np.ndarray] | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    lstm: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    linear: list[list[np.ndarray]] = field(default_factory=list)  # [weight [out, in], bias [out]]
    eps: float = 1e-5
    slope: float = 0.01
    hidden: int = 0
    n_features: int = 0
    log_softmax: bool = False


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


class _Values:
    """Initializers and constants by name. A value the graph computes (the sinc filters of a torch
    export, zero initial LSTM states) is taken when the parameters alone determine it: the graph
    is run twice with onnx's reference evaluator, on two different random inputs, and the value
    must come out the same."""

    DUMMY_LEN = 3200  # the time dim of the evaluation inputs: 0.2 s of 16 kHz audio, a few frames

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        self.known: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.evaluated: list[dict[str, Any]] = []

    def __contains__(self, name: str) -> bool:
        return name in self.known

    def _evaluate(self) -> list[dict[str, Any]]:
        from onnx.reference import ReferenceEvaluator

        inp = self.model.graph.input[0]
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
        symbolic = [i for i, d in enumerate(dims) if d < 0]
        for i in symbolic:  # the last symbolic dim is time; the others (batch) are 1
            dims[i] = self.DUMMY_LEN if i == symbolic[-1] else 1
        evaluator = ReferenceEvaluator(self.model)
        runs = []
        for seed in (0, 1):
            feed = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
            results = evaluator.run(None, {inp.name: feed}, intermediate=True)
            assert isinstance(results, dict)  # intermediate=True: every value by name
            runs.append(results)
        return runs

    def get(self, name: str) -> np.ndarray:
        if name in self.known:
            return self.known[name]
        if not self.evaluated:
            self.evaluated = self._evaluate()
        first, second = (run.get(name) for run in self.evaluated)
        if first is None or second is None:
            raise ConversionError(f"value '{name}' is neither an initializer nor computed by the graph")
        if not np.array_equal(first, second):
            raise ConversionError(f"value '{name}' depends on the input, not only on the parameters")
        return np.asarray(first)


def _read(model: Any) -> _Net:
    from onnx import numpy_helper

    graph = model.graph
    consts = _Values(model)
    net = _Net()

    def weight(node: Any, i: int, what: str) -> np.ndarray:
        if i >= len(node.input) or not node.input[i]:
            raise ConversionError(f"{node.op_type} node '{node.name}': no {what}")
        return consts.get(node.input[i]).astype(np.float32)

    def check_int_attr(node: Any, attrs: dict[str, Any], name: str, allowed: int) -> None:
        values = attrs.get(name)
        if values is not None and any(v != allowed for v in np.atleast_1d(values)):
            raise ConversionError(f"{node.op_type} node '{node.name}': {name}={values} is not supported")

    block: dict[str, Any] | None = None
    for node in graph.node:
        op, attrs = node.op_type, _attrs(node)
        if op == "If":
            # torch's export of asteroid's filterbank conv: a rank check picking one of two
            # branches, each a Conv (the second reshapes around it) with the same weights
            convs = [n for n in attrs["then_branch"].node if n.op_type == "Conv"]
            if len(convs) != 1:
                raise ConversionError(f"If node '{node.name}': not a single-Conv branch")
            node, op, attrs = convs[0], "Conv", _attrs(convs[0])
        if op == "Constant":
            consts.known[node.output[0]] = numpy_helper.to_array(attrs["value"])
        elif op == "Identity" and node.input[0] in consts:
            consts.known[node.output[0]] = consts.get(node.input[0])
        elif op == "InstanceNormalization":
            pair = (weight(node, 1, "scale"), weight(node, 2, "bias"))
            net.eps = float(attrs.get("epsilon", 1e-5))
            if block is not None:
                block["norm"] = pair
                net.blocks.append(block)
                block = None
            elif net.wav_norm is None and not net.blocks:
                net.wav_norm = pair
            else:
                raise ConversionError(f"InstanceNormalization node '{node.name}' outside a conv block")
        elif op == "Conv":
            for a in ("pads", "group", "dilations"):
                check_int_attr(node, attrs, a, 0 if a == "pads" else 1)
            strides = list(attrs.get("strides", [1]))
            bias = weight(node, 2, "bias") if len(node.input) > 2 and node.input[2] else None
            block = {"w": weight(node, 1, "weight"), "b": bias, "stride": strides[0], "abs": False, "pool": 1}
        elif op == "Abs" and block is not None:
            block["abs"] = True
        elif op == "MaxPool" and block is not None:
            check_int_attr(node, attrs, "pads", 0)
            check_int_attr(node, attrs, "ceil_mode", 0)
            k, s = list(attrs["kernel_shape"]), list(attrs.get("strides", [1]))
            if k != s:
                raise ConversionError(f"MaxPool node '{node.name}': kernel {k} != strides {s}")
            block["pool"] = k[0]
        elif op == "LeakyRelu":
            net.slope = float(attrs.get("alpha", 0.01))
        elif op == "LSTM":
            if _text(attrs.get("direction", "forward")) != "bidirectional":
                raise ConversionError(f"LSTM node '{node.name}': only bidirectional LSTMs are supported")
            acts = [_text(a) for a in attrs.get("activations", [])]
            if acts and acts != ["Sigmoid", "Tanh", "Tanh"] * 2:
                raise ConversionError(f"LSTM node '{node.name}': activations {acts} are not supported")
            if attrs.get("clip") is not None or attrs.get("input_forget", 0) or attrs.get("layout", 0):
                raise ConversionError(f"LSTM node '{node.name}': clip, input_forget and layout=1 are not supported")
            if len(node.input) > 4 and node.input[4]:
                raise ConversionError(f"LSTM node '{node.name}': sequence_lens is not supported")
            for i, what in ((5, "initial_h"), (6, "initial_c")):
                if len(node.input) > i and node.input[i] and np.any(consts.get(node.input[i]) != 0):
                    raise ConversionError(f"LSTM node '{node.name}': a non-zero {what} is not supported")
            w, r = weight(node, 1, "W"), weight(node, 2, "R")
            hidden = int(attrs["hidden_size"])
            b = weight(node, 3, "B") if len(node.input) > 3 and node.input[3] else np.zeros((2, 8 * hidden), np.float32)
            if net.hidden and hidden != net.hidden:
                raise ConversionError(f"LSTM node '{node.name}': hidden size {hidden} differs from {net.hidden}")
            net.hidden = hidden
            if not net.lstm:
                net.n_features = w.shape[2]
            net.lstm.append((w, r, b))
        elif op in ("MatMul", "Gemm") and net.lstm:
            if op == "MatMul":
                w = weight(node, 1, "weight").T  # x @ W: W is [in, out]
                bias = None
            else:
                if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                    raise ConversionError(f"Gemm node '{node.name}': transA/alpha/beta are not supported")
                w = weight(node, 1, "weight")
                w = w if attrs.get("transB", 0) else w.T
                bias = weight(node, 2, "bias") if len(node.input) > 2 and node.input[2] else None
            net.linear.append([w, bias if bias is not None else np.zeros(w.shape[0], np.float32)])
        elif op == "Add" and net.linear and any(i in consts for i in node.input):
            b = next(consts.get(i) for i in node.input if i in consts).astype(np.float32)
            net.linear[-1][1] = net.linear[-1][1] + b
        elif op == "LogSoftmax":
            net.log_softmax = True
    if block is not None:
        raise ConversionError("the last conv block has no InstanceNormalization")
    if not net.lstm:
        raise ConversionError("no LSTM node in the graph")
    if net.blocks and net.wav_norm is None:
        raise ConversionError("a front-end without the waveform's InstanceNormalization")
    if net.blocks and not net.blocks[0]["abs"]:
        raise ConversionError("the first conv block has no Abs (not a SincNet front-end)")
    if any(b["abs"] for b in net.blocks[1:]):
        raise ConversionError("Abs after a conv block other than the first")
    if net.log_softmax and not net.linear:
        raise ConversionError("LogSoftmax without a classifier layer")
    return net


def _write(net: _Net, out: Path, sample_rate: int) -> None:
    gguf = import_gguf()

    tmp = out.with_name(out.name + ".part")
    w = gguf.GGUFWriter(str(tmp), ARCH)
    w.add_uint32(f"{ARCH}.sample_rate", sample_rate)
    w.add_float32(f"{ARCH}.norm_epsilon", net.eps)
    w.add_float32(f"{ARCH}.leaky_relu_slope", net.slope)
    w.add_uint32(f"{ARCH}.sincnet.n_blocks", len(net.blocks))
    w.add_uint32(f"{ARCH}.lstm.n_layers", len(net.lstm))
    w.add_uint32(f"{ARCH}.lstm.hidden_size", net.hidden)
    w.add_string(f"{ARCH}.lstm.gate_order", GATE_ORDER)
    linear = net.linear[:-1] if net.log_softmax else net.linear
    w.add_uint32(f"{ARCH}.n_linear", len(linear))
    if not net.blocks:
        w.add_uint32(f"{ARCH}.input_features", net.n_features)
    else:
        assert net.wav_norm is not None
        w.add_tensor("sincnet.wav_norm.weight", net.wav_norm[0].reshape(1))
        w.add_tensor("sincnet.wav_norm.bias", net.wav_norm[1].reshape(1))
    for i, b in enumerate(net.blocks):
        w.add_uint32(f"{ARCH}.sincnet.{i}.conv_stride", int(b["stride"]))
        w.add_uint32(f"{ARCH}.sincnet.{i}.pool", int(b["pool"]))
        w.add_tensor(f"sincnet.{i}.conv.weight", b["w"])
        if b["b"] is not None:
            w.add_tensor(f"sincnet.{i}.conv.bias", b["b"])
        w.add_tensor(f"sincnet.{i}.norm.weight", b["norm"][0])
        w.add_tensor(f"sincnet.{i}.norm.bias", b["norm"][1])
    for i, (wi, wh, bias) in enumerate(net.lstm):
        w.add_tensor(f"lstm.{i}.weight_ih", np.ascontiguousarray(wi))
        w.add_tensor(f"lstm.{i}.weight_hh", np.ascontiguousarray(wh))
        w.add_tensor(f"lstm.{i}.bias", np.ascontiguousarray(bias))
    for i, (lw, lb) in enumerate(linear):
        w.add_tensor(f"linear.{i}.weight", np.ascontiguousarray(lw))
        w.add_tensor(f"linear.{i}.bias", lb)
    if net.log_softmax:
        w.add_tensor("classifier.weight", np.ascontiguousarray(net.linear[-1][0]))
        w.add_tensor("classifier.bias", net.linear[-1][1])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)  # a failed conversion never leaves a half-written file at the destination


def convert(onnx_model: str | os.PathLike[str] | Any, out: str | os.PathLike[str], sample_rate: int = 16000) -> Path:
    """Convert an ONNX model (a path or a loaded ``onnx.ModelProto``) to a GGUF at ``out``."""
    import onnx

    model = onnx.load(str(onnx_model)) if isinstance(onnx_model, (str, os.PathLike)) else onnx_model
    out = Path(out)
    _write(_read(model), out, sample_rate)
    return out
