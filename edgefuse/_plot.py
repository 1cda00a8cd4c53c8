"""matplotlib for the reports' plots: an optional dependency (the ``plot`` extra)."""

from __future__ import annotations

from edgefuse.errors import EdgefuseError


def pyplot(required: bool = False):
    """``matplotlib.pyplot`` on the non-interactive Agg backend. Without matplotlib: None, or with
    ``required`` an EdgefuseError naming the extra to install."""
    try:
        import matplotlib
    except ImportError as e:
        if required:
            raise EdgefuseError("plotting needs matplotlib: pip install 'edgefuse[plot]'") from e
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
