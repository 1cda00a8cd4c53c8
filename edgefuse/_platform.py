"""What CPU this is: its model name and instruction-set flags (``/proc/cpuinfo`` on Linux)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu() -> tuple[str, frozenset[str]]:
    """``(model name, flags)``; elsewhere than Linux the platform's processor name and no flags."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown"
    return name, frozenset(info.get("flags", "").split())
