"""--help texts are written for users: every option explained, no developer notes, no reST markup."""

from __future__ import annotations

import argparse

import pytest

from lorat_scale.cli import build_parser
from lorat_scale.cli import main as cli_main

DEV_WORDS = ("``", "`", "SUBCOMMANDS", "function below", "nanoGPT", "read top to bottom", "TODO", "lorat_spec")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_a_help_text():
    missing = [f"{name} {a.option_strings[0] if a.option_strings else a.dest}"
               for name, p in _subparsers().items() if name != "train"  # train: the loop's own parser
               for a in p._actions if a.help is None and not isinstance(a, argparse._HelpAction)]
    assert missing == []


@pytest.mark.parametrize("command", ["", *sorted(_subparsers())])
def test_help_text_has_no_developer_notes(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main([command, "--help"] if command else ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lorat-scale")
    found = [w for w in DEV_WORDS if w in out]
    assert found == [], f"lorat-scale {command} --help shows {found}"
