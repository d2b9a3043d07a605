"""CPU targets for `--optimize-for`, and what this machine's CPU offers.

Why `reduce_range` matters: without VNNI, x86 int8 kernels multiply u8×s8 pairs with `vpmaddubsw`, which
saturates at 16 bits; 7-bit weights avoid that. VNNI (AVX512-VNNI / AVX-VNNI) and ARM64 (`sdot`/`udot`)
accumulate in 32 bits, so full 8-bit weights are safe there and more accurate.

What was tested: export, parity, fusion, dynamic and static int8 on x86_64 with AVX512-VNNI (ONNX Runtime 1.32,
plain `onnxruntime` CPU package). Not tested: AVX2-only x86 and ARM64 hardware; there the target only sets
`reduce_range` and is recorded. Fused graphs use ONNX Runtime contrib ops (`com.microsoft` Attention,
SkipLayerNormalization, …), present in the standard CPU package but not in custom minimal builds; `--fuse off`
keeps the graph to standard ONNX ops plus the int8 ones.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    name: str
    reduce_range: bool
    note: str


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("avx512-vnni", False, "x86 with AVX512-VNNI or AVX-VNNI: 8-bit weights, 32-bit accumulation"),
        Target("avx2", True, "x86 without VNNI: 7-bit weights (reduce_range) avoid 16-bit saturation"),
        Target("arm64", False, "ARM64 with dot-product instructions: 8-bit weights"),
    )
}

FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp")


def cpu_flags() -> list[str]:
    """The int8-relevant instruction-set flags of this CPU (Linux /proc/cpuinfo; empty elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    flags: set[str] = set()
    for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [f for f in FLAGS_OF_INTEREST if f in flags]


def host_cpu() -> dict[str, object]:
    return {"machine": platform.machine(), "flags": cpu_flags()}


def host_target() -> str | None:
    """The target name that matches this CPU, or None when it cannot be told."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = set(cpu_flags())
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "avx512-vnni"
    if "avx2" in flags:
        return "avx2"
    return None


def resolve_reduce_range(reduce_range: bool | None, optimize_for: str | None) -> tuple[bool, str]:
    """The reduce_range to use and why: explicit choice, else the target's, else this CPU's."""
    if reduce_range is not None:
        return reduce_range, "set explicitly"
    if optimize_for is not None:
        return TARGETS[optimize_for].reduce_range, f"from --optimize-for {optimize_for}"
    host = host_target()
    if host is None:
        return False, "CPU not recognised; 8-bit weights"
    return TARGETS[host].reduce_range, f"from this CPU ({host})"
