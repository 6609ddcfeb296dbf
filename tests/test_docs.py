"""The documentation that is generated from the code is up to date."""

from pathlib import Path

from contrasphere.cli.list_cmd import markdown

ROOT = Path(__file__).resolve().parent.parent


def test_objectives_page_lists_every_registered_loss():
    page = (ROOT / "docs" / "objectives.md").read_text()
    assert markdown() in page, "docs/objectives.md is stale: regenerate its table with `contrasphere list --markdown`"
