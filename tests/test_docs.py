"""The README renders as meant: its tables are tables, not text inside a stray code fence."""
from pathlib import Path

from markdown_it import MarkdownIt

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_render_as_tables():
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(README.read_text(encoding="utf-8"))
    in_code = [t.content for t in tokens if t.type in ("fence", "code_block")]
    assert not any("|---|" in block for block in in_code), "a table is inside a code block (stray ``` fence?)"
    assert sum(t.type == "table_open" for t in tokens) >= 1
    numbers = next(i for i, t in enumerate(tokens) if t.type == "inline" and t.content == "Numbers")
    assert any(t.type == "table_open" for t in tokens[numbers:]), "the Numbers section has no table"
