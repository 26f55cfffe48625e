"""Command-line flags in both spellings: ``--num-images`` and ``--num_images`` name the same flag.

zeroft's commands grew up with two conventions: the CLI, the app and the toy world use dashes, the
trainer and ``train.prepare`` underscores, as diffusers' training examples do. A person should not
have to remember which command takes which, so every project command parses with
:class:`ArgumentParser`, which accepts each long option in either spelling (help shows the one it
was defined with).

Example:
    >>> parser = ArgumentParser(prog="demo")
    >>> _ = parser.add_argument("--num-images", type=int)
    >>> parser.parse_args(["--num_images", "3"]).num_images
    3
"""

from __future__ import annotations

import argparse
import sys


def other_spelling(option: str) -> str:
    """``--a_b`` for ``--a-b`` and the reverse (a name with neither, or with both, is its own other spelling)."""
    name = option[2:]
    if "_" in name and "-" not in name:
        return "--" + name.replace("_", "-")
    if "-" in name and "_" not in name:
        return "--" + name.replace("-", "_")
    return option


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, taking every long option in both spellings (module docstring). Sub-command parsers made
    with ``add_subparsers`` are of this class too, so each respells the arguments it parses."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self._respelled(args), namespace)

    def _respelled(self, args: list[str]) -> list[str]:
        # argparse's own map from option string to action: the stdlib has no public way to list a parser's options
        known = self._option_string_actions
        respelled = []
        for index, token in enumerate(args):
            if token == "--":  # everything after it is a positional value
                return respelled + args[index:]
            if token.startswith("--"):
                option, equals, value = token.partition("=")
                if option not in known and other_spelling(option) in known:
                    token = other_spelling(option) + equals + value
            respelled.append(token)
        return respelled
