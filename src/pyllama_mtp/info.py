"""Build facts: the pinned llama.cpp commit, backends, patches, devices."""

from __future__ import annotations

from dataclasses import dataclass

from ._native import cstr, lib


@dataclass(frozen=True)
class BuildInfo:
    llama_cpp_commit: str
    backends: tuple[str, ...]
    patches: tuple[str, ...]
    devices: tuple[str, ...]
    gpu_offload: bool
    system: str

    def format(self) -> str:
        lines = [
            f"llama.cpp commit: {self.llama_cpp_commit}",
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

    return BuildInfo(
        llama_cpp_commit=cstr(lib.llama_mtp_llama_commit()),
        backends=split(cstr(lib.llama_mtp_backends()), ","),
        patches=split(cstr(lib.llama_mtp_patches()), ","),
        devices=split(cstr(lib.llama_mtp_devices()), "\n"),
        gpu_offload=bool(lib.llama_supports_gpu_offload()),
        system=cstr(lib.llama_print_system_info()).strip(),
    )
