"""Exception types raised by pyllama-mtp. Every native failure maps to one of these."""

from __future__ import annotations


class PyllamaMtpError(Exception):
    """Base class of every error raised by pyllama-mtp."""


class ModelLoadError(PyllamaMtpError):
    """A model file is missing, unreadable, truncated, corrupt or of an unsupported architecture."""


class ContextError(PyllamaMtpError):
    """A context could not be created (bad parameters, out of memory, missing ``ctx_other``)."""


class DecodeError(PyllamaMtpError):
    """The native decode failed."""


class RemoteDeviceError(PyllamaMtpError, ConnectionError):
    """An RPC server (``Model(rpc=[...])``) could not be reached, or stopped answering mid-generation.

    After a server is lost, the model's remote layers are gone: close the model (and its contexts
    and sessions) and load it again once the server is back.
    """


class ContextOverflowError(DecodeError):
    """The tokens do not fit in the context's KV cache (``n_ctx``)."""


class InvalidTokenError(PyllamaMtpError, ValueError):
    """A token id outside the model's vocabulary."""


class InvalidAudioError(PyllamaMtpError, ValueError):
    """Audio a segmenter cannot take: empty, or holding NaN or infinite samples."""


class IncompatibleModelsError(PyllamaMtpError, ValueError):
    """A target and drafter that cannot run together (vocabulary, hidden width, no MTP head)."""


class OutputFileError(PyllamaMtpError, OSError):
    """A file pyllama-mtp writes (an acceptance trace) could not be opened."""


class ConcurrentUseError(PyllamaMtpError, RuntimeError):
    """A session was called from a second thread while a call was running (one session per thread)."""


class ClosedError(PyllamaMtpError):
    """A model, context or session was used after ``close()``."""


class TensorOverrideError(PyllamaMtpError, ValueError):
    """A placement option of ``Model`` that cannot be followed: a ``tensor_overrides`` rule with a bad
    regex, an unknown device (there or in ``devices``), an ``rpc`` entry that is not ``host:port``,
    or a ``split_mode``, ``main_device`` or ``tensor_split`` that does not fit the devices."""


class ConversionError(PyllamaMtpError, ValueError):
    """A checkpoint could not be converted to GGUF (the message says which file and why)."""


class ConverterMissingError(PyllamaMtpError, FileNotFoundError):
    """This installation has no Hugging Face converter (a build that skipped installing it)."""


class ChatTemplateError(PyllamaMtpError, ValueError):
    """A conversation that cannot be rendered: the model has no chat template, the template does not
    parse, or it rejects the messages (a role or an order it does not allow)."""
