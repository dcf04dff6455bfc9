"""Build facts: the pinned llama.cpp commit, backends, patches, devices."""

from __future__ import annotations

from dataclasses import dataclass

from . import _build_config
from ._native import cstr, lib


@dataclass(frozen=True)
class BuildInfo:
    llama_cpp_commit: str
    backend: str  # what the package was built for: cpu, cuda or metal
    backend_note: str  # why not a GPU backend, where the build looked for one and fell back to the CPU
    backends: tuple[str, ...]
    patches: tuple[str, ...]
    devices: tuple[str, ...]
    gpu_offload: bool
    system: str

    def format(self) -> str:
        lines = [
            f"llama.cpp commit: {self.llama_cpp_commit}",
            f"built for:        {self.backend}" + (f" ({self.backend_note})" if self.backend_note else ""),
            f"backends:         {', '.join(self.backends)}",
            f"gpu offload:      {'yes' if self.gpu_offload else 'no'}",
            f"patches applied:  {len(self.patches)}",
            *(f"  - {p}" for p in self.patches),
            "devices:",
            *(f"  - {d}" for d in self.devices),
            f"system:           {self.system}",
        ]
        return "\n".join(lines)


def build_info() -> BuildInfo:
    """What this installed build is made of."""

    def split(text: str, sep: str) -> tuple[str, ...]:
        return tuple(s for s in text.split(sep) if s)

    config = _build_config.read()
    return BuildInfo(
        llama_cpp_commit=cstr(lib.llama_mtp_llama_commit()),
        backend=config["backend"],
        backend_note=config["backend_note"],
        backends=split(cstr(lib.llama_mtp_backends()), ","),
        patches=split(cstr(lib.llama_mtp_patches()), ","),
        devices=split(cstr(lib.llama_mtp_devices()), "\n"),
        gpu_offload=bool(lib.llama_mtp_local_gpu()),
        system=cstr(lib.llama_print_system_info()).strip(),
    )
