"""``python -m train.flag_table``: the Markdown table of every flag of ``python -m train.train``.

The table is generated from ``train.args.build_parser()``, one table per argument group, so the
documentation cannot drift from the parser. docs/training.md holds it between the lines
:data:`BEGIN` and :data:`END`; ``python -m train.flag_table --write docs/training.md`` rewrites
that region only, and tests/test_train_config.py fails when the file and the parser disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zeroft.errors import InputError

from .args import build_parser

BEGIN = "<!-- flags:begin (python -m train.flag_table --write docs/training.md) -->"
END = "<!-- flags:end -->"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (a bar would end the cell, <model> would be read as HTML)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.default is None or action.default in ([], ()):
        return "–"
    return _cell(str(action.default))


def _meaning(action: argparse.Action) -> str:
    meaning = action.help or ""
    if action.choices:
        meaning += f" ({', '.join(map(str, action.choices))})"
    return _cell(meaning)


def flag_table(parser: argparse.ArgumentParser | None = None) -> str:
    """Markdown: for each argument group of ``parser`` (default: train.train's), its title and a table of
    its flags (flag, default, meaning; choices after the meaning)."""
    parser = parser or build_parser()
    sections = []
    # argparse has no public accessor for its groups; every documentation tool reads these two attributes.
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.option_strings and a.dest != "help"]
        if not actions:
            continue
        rows = [f"*{group.title}*", "", "| flag | default | meaning |", "| --- | --- | --- |"]
        for action in actions:
            flags = " / ".join(f"`{option}`" for option in action.option_strings)
            rows.append(f"| {flags} | {_default(action)} | {_meaning(action)} |")
        sections.append("\n".join(rows))
    return "\n\n".join(sections) + "\n"


def replace_region(text: str, table: str) -> str:
    """``text`` with the lines between :data:`BEGIN` and :data:`END` replaced by ``table``; the rest kept.

    Raises:
        zeroft.errors.InputError: the marker lines are missing or out of order.
    """
    lines = text.splitlines(keepends=True)
    stripped = [line.strip() for line in lines]
    if BEGIN not in stripped or END not in stripped[stripped.index(BEGIN) + 1:]:
        raise InputError(f"The file lacks the marker lines {BEGIN!r} and, after it, {END!r}.")
    begin = stripped.index(BEGIN)
    end = stripped.index(END, begin + 1)
    return "".join(lines[:begin + 1]) + "\n" + table + "\n" + "".join(lines[end:])


def write_table(path: str | Path, parser: argparse.ArgumentParser | None = None) -> bool:
    """Rewrite the flag table between the markers of the Markdown file ``path``; True when it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    updated = replace_region(text, flag_table(parser))
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.flag_table", description=__doc__.splitlines()[0])
    p.add_argument("--write", metavar="MARKDOWN", default=None,
                   help="replace the table between the flags:begin / flags:end lines of this file instead of printing")
    args = p.parse_args(argv)
    if args.write is None:
        sys.stdout.write(flag_table())
        return 0
    try:
        changed = write_table(args.write)
    except (InputError, FileNotFoundError) as error:
        print(f"error: {args.write}: {error}", file=sys.stderr)
        return 2
    print(f"{args.write}: {'updated' if changed else 'already up to date'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
