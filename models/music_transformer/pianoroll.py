"""A piano roll (PNG) of a melody and its extension: one bar per note, the extension in another colour."""

from __future__ import annotations

import io
from collections.abc import Sequence


def piano_roll_png(context: Sequence, extension: Sequence, title: str = "") -> bytes:
    """context and extension are notes (start, end, pitch, velocity in seconds/MIDI); returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4), dpi=100)
    for notes, colour, label in ((context, "tab:blue", "input"), (extension, "tab:orange", "extension")):
        bars = [(n.start, max(n.end - n.start, 0.01)) for n in notes]
        for note, bar in zip(notes, bars, strict=True):
            ax.broken_barh([bar], (note.pitch - 0.4, 0.8), facecolors=colour)
        ax.plot([], [], color=colour, linewidth=6, label=f"{label} ({len(notes)} notes)")
    if context and extension:
        ax.axvline(max(n.end for n in context), color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title or "piano roll")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
