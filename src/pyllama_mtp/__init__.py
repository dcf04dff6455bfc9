"""pyllama-mtp: Gemma-4 multi-token-prediction speculative decoding from Python.

Public API: :class:`Model`, :class:`Context`, :class:`MtpSession` (with ``chat``), :class:`ChatTemplate`,
:class:`Segmenter` (speaker segmentation), :func:`quantize`, :func:`build_info` and the exceptions in
:mod:`pyllama_mtp.errors`. ``pyllama_mtp.server`` is the OpenAI-compatible server (``[serve]`` extra).
"""

from __future__ import annotations

from .chat import ChatReply, ChatTemplate
from .context import Context
from .errors import (
    ChatTemplateError,
    ClosedError,
    ConcurrentUseError,
    ContextError,
    ContextOverflowError,
    ConversionError,
    ConverterMissingError,
    DecodeError,
    IncompatibleModelsError,
    InvalidAudioError,
    InvalidTokenError,
    ModelLoadError,
    OutputFileError,
    PyllamaMtpError,
    RemoteDeviceError,
    TensorOverrideError,
)
from .info import BuildInfo, build_info
from .model import Model
from .quantize import quantize
from .segmentation import Segmenter, Windows, to_speakers
from .session import MtpSession, MtpStats, Sampling, Step

__version__ = "0.1.0"

__all__ = [
    "BuildInfo",
    "ChatReply",
    "ChatTemplate",
    "ChatTemplateError",
    "ClosedError",
    "ConcurrentUseError",
    "Context",
    "ContextError",
    "ContextOverflowError",
    "ConversionError",
    "ConverterMissingError",
    "DecodeError",
    "InvalidAudioError",
    "InvalidTokenError",
    "Model",
    "ModelLoadError",
    "MtpSession",
    "MtpStats",
    "OutputFileError",
    "IncompatibleModelsError",
    "PyllamaMtpError",
    "RemoteDeviceError",
    "TensorOverrideError",
    "Sampling",
    "Segmenter",
    "Step",
    "Windows",
    "build_info",
    "quantize",
    "to_speakers",
]
