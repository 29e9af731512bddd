"""Rich tables for the command line."""


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Print ``rows`` under ``header``: the first two columns left-aligned, the rest right."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        t.add_row(*r)
    Console(width=max(100, 14 * len(header))).print(t)


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON (NaN is an error: JSON has none)."""
    import json

    print(json.dumps(obj, indent=2, allow_nan=False))


def human_count(n: float) -> str:
    """A parameter count for people: 1.6B, 124M, 23K."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:,.1f}{unit}" if unit == "B" else f"{n / scale:,.0f}{unit}"
    return f"{n:.0f}"
