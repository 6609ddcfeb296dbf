"""``contrasphere list`` and ``--help``, run in-process through ``main(argv)``."""

from __future__ import annotations

import json

import pytest

from contrasphere.cli import main


def test_list_and_help(capsys):
    assert main(["list"]) == 0
    assert "nt_xent" in capsys.readouterr().out
    assert main(["list", "--json"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert "align_uniform" in names and names == sorted(names)
    with pytest.raises(SystemExit) as info:
        main(["metrics", "--help"])
    assert info.value.code == 0 and "--positives" in capsys.readouterr().out
