"""Every `osiris-dagster ...` and `dagster ...` command the docs show parses: its subcommands and options exist.

A user copies commands from the README and docs/; a renamed option or subcommand (ours, or
Dagster's after a version bump) must fail here, not in their shell. Each command is parsed by the
program's own click parser (`make_context`, which rejects unknown options and extra arguments)
without being run. Placeholders
(`<pipeline>`, `X`) stand in for positional values, which click cannot judge; option names and
command paths it can.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest
from dagster._cli import cli as dagster_cli
from dagster._daemon.cli import cli as dagster_daemon_cli

from osiris_dagster.cli import cli

PROGRAMS: dict[str, click.Command] = {
    "osiris-dagster": cli,
    "dagster": dagster_cli,
    "dagster-daemon": dagster_daemon_cli,
}

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# A program as a command: at a line's start in a code block (after `$ `, a `.venv/bin/`
# prefix or `VAR=value` assignments), or at the start of an inline code span in prose.
_PREFIX = r"(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:\S*/)?"
_PROGRAM = r"(?P<program>osiris-dagster|dagster-daemon|dagster)"
_BLOCK_LINE = re.compile(rf"^\s*{_PREFIX}{_PROGRAM}(?P<args>(?:\s.*)?)$")
_INLINE = re.compile(rf"`{_PREFIX}{_PROGRAM}(?P<args>(?:\s[^`]*)?)`")
_END = re.compile(r"\s(?:[|>&;]|\#).*$")  # a pipe, a redirect, `&&`, a comment


def documented_commands() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        in_block = False
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            matches = [_BLOCK_LINE.match(line)] if in_block else list(_INLINE.finditer(line))
            for match in matches:
                if match is not None:
                    found.append((f"{doc.relative_to(REPO)}:{number}", match["program"], match["args"].strip()))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands_to_check() -> None:
    # The extraction finds the README's own quick-start commands (a broken regex would find none).
    assert len(COMMANDS) >= 30
    assert ("osiris-dagster", "run movies_to_csv") in {(program, args) for _, program, args in COMMANDS}
    assert any(program == "osiris-dagster" and args.startswith("sandbox serve") for _, program, args in COMMANDS)
    assert any(program == "dagster" and args.startswith("job launch") for _, program, args in COMMANDS)
    assert any(program == "dagster-daemon" for _, program, _ in COMMANDS)


def _variants(args: str) -> list[list[str]]:
    """The argument lists a documented command stands for.

    Shell syntax the docs use is undone first: ``$(...)`` becomes one placeholder value,
    ``[--opt x]`` (an optional part) is kept without its brackets, and ``a|b|c`` (alternatives)
    gives one command per alternative.
    """
    text = args
    while (substituted := re.sub(r"\$\([^()]*\)", "VALUE", text)) != text:  # innermost first: they nest
        text = substituted
    text = _END.sub("", " " + text).strip().rstrip("\\").strip()
    text = text.replace("[", " ").replace("]", " ")
    words = shlex.split(text.replace("<", "'<").replace(">", ">'"))
    variants: list[list[str]] = [[]]
    for word in words:
        options = word.split("|") if "|" in word and not word.startswith("-") else [word]
        variants = [[*v, option] for v in variants for option in options]
    return variants


def _parse(program: str, words: list[str]) -> None:
    """Parse as the CLI would, down to the last subcommand, without running anything.

    A missing positional value is accepted: prose mentions a command without its arguments
    (`osiris-dagster run`); so is a file that does not exist here (a file the doc has the user
    write first, like `workspace.grpc.yaml`). Unknown subcommands and options, and extra
    arguments, fail.
    """
    command = PROGRAMS[program]
    name = program
    parent: click.Context | None = None
    while True:
        try:
            context = command.make_context(name, list(words), parent=parent)
        except click.MissingParameter:
            return
        except click.BadParameter as error:
            if "does not exist" in error.format_message():
                return
            raise
        if not isinstance(command, click.Group):
            return
        with warnings.catch_warnings():  # click 8.2 keeps a group's subcommand in protected_args
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*context.protected_args, *context.args]
        if not rest:
            return  # a group on its own (e.g. `osiris-dagster demo`, invoke_without_command)
        found, sub, words = command.resolve_command(context, rest)
        assert sub is not None and found is not None
        command, name, parent = sub, found, context


@pytest.mark.parametrize(("where", "program", "args"), COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_documented_command_parses(where: str, program: str, args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the docs' relative files (workspace.yaml) are the repository's
    for words in _variants(args):
        if words in ([], ["--help"]) or words[-1] == "...":
            continue
        try:
            _parse(program, words)
        except click.UsageError as error:
            pytest.fail(f"{where}: `{program} {' '.join(words)}`: {error.format_message()}")
