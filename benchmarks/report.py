"""The one report writer of the benchmarks: results → markdown through a template, into BENCHMARKS.md's sections.

Each script hands a context (its results, and tables as lists of rows) to a Jinja template in
`benchmarks/templates/`; the prose lives there, not in code. Each script owns its sections of BENCHMARKS.md
(`<!-- name:begin -->` ... `<!-- name:end -->`), so regenerating one never touches numbers another produced.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from common import BENCHMARKS_MD

TEMPLATES = Path(__file__).resolve().parent / "templates"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage (82.4), or a dash."""
    return "–" if value is None else f"{100 * value:.{digits}f}"


def ratio(value: float | None) -> str:
    """1.00×, 0.25×, 6.5×; a dash for a missing value."""
    if value is None:
        return "–"
    return f"{value:.1f}×" if value >= 2 else f"{value:.2f}×" if value >= 0.01 else f"{value:.4f}×"


def millions(value: int | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1e6:.1f} M" if value >= 1e6 else f"{value / 1e6:.2f} M"


def number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,  # a renamed result field fails loudly instead of printing nothing
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(percent=percent, ratio=ratio, millions=millions, number=number)
    env.globals["table"] = markdown_table
    return env


def render(template: str, **context: Any) -> str:
    """The named template rendered with `context`; runs of blank lines collapse to one."""
    text = environment().get_template(template).render(**context)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def replace_section(section: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the text between `<!-- {section}:begin -->` and `<!-- {section}:end -->`, keeping everything else."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{path.name} has no {begin} ... {end} markers; add them where the section belongs")
    path.write_text(pattern.sub(lambda _: f"{begin}\n{body.strip()}\n{end}", text), encoding="utf-8")


def write_section(section: str, template: str, **context: Any) -> str:
    """Render `template` and put it in `section` of BENCHMARKS.md; returns the text."""
    text = render(template, **context)
    replace_section(section, text)
    return text
