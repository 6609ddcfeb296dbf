"""The README's commands are the ones CI runs, and they name only what the package provides."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (ROOT / "README.md").read_text()
    assert f"\n{ci_command}\n" in readme


def test_readme_starts_with_two_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```")
    first = blocks[1].strip().splitlines()
    assert first[0] == "bash" or first[0].startswith("python3")
    commands = [line for line in first if line.startswith("python3")]
    assert len(commands) == 2 and commands[0].endswith("contrasphere train digits") and commands[1].endswith("pytest")
