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


def save(fig, path, dpi: int = 110):
    """Lay ``fig`` out, write it to ``path`` as PNG and close it; return ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
