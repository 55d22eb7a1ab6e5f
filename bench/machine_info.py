"""The machine a benchmark ran on, kept with its figures by every script in this folder."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

VECTOR_EXTENSIONS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the widest vectors and matrix units


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU the figures came from: virtual machines of the same name change hardware between days,
    so the model, family and vector extensions are kept with every result."""
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in cpuinfo.read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                break  # the end of the first processor's block
            fields[key.strip()] = value.strip()
    if "model name" in fields:
        info["cpu"] = fields["model name"]
        info["cpu_family_model"] = f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}"
        info["cpu_mhz"] = fields.get("cpu MHz")
        flags = set(fields.get("flags", "").split())
        info["vector_extensions"] = [f for f in VECTOR_EXTENSIONS if f in flags]
    return info
