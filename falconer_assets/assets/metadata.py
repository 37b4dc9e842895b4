"""Formatting helpers for asset metadata (markdown tables the web UI renders)."""


def md_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats are shown with 3 decimals, ``|`` and newlines in cells are escaped."""

    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
