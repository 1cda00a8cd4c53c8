"""Release numbers of the libraries edgefuse works with (torch, Triton), read the one way."""

from __future__ import annotations


def major_minor(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string such as '2.5.1+cu124', '2.3.0a0+nv24.03', '3.5.0rc1'
    or '3.7.0+git1a2b'; None when it reads as neither (a source build may say anything)."""
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()))
    except (IndexError, ValueError):
        return None
