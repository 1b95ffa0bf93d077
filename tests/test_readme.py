"""Every fenced block of README.md and examples/**/README.md does what it says.

``python`` blocks, by their first line:
- ``# fragment: see <path>``: a piece of a runnable example; the path must exist (the
  examples themselves run in tests/test_examples.py). Use this for snippets that need a
  second service or names defined elsewhere.
- ``# test_<name>.py``: a pytest module; it is written to that file and run with pytest,
  which must pass (the ``local_opik`` fixture comes from the installed plugin).
- anything else: a script, run as written in a fresh interpreter with ``OPIK_URL_OVERRIDE``
  pointing at a LocalOpik (standing in for the reader's Opik); it must exit 0, and
  everything it sent must have been accepted without a warning.

``bash`` blocks: every ``pip install`` installs from the checkout or from git (there is no
opik-otel on PyPI), and every ``python <file>`` names a file that exists.

New blocks are covered automatically.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple

import pytest

from opik_otel.testing import LocalOpik

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", *sorted((REPO / "examples").glob("**/README.md"))]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.M | re.S)
FRAGMENT = re.compile(r"^# fragment: see (\S+)")
PYTEST_MODULE = re.compile(r"^# (test_\w+\.py)\b")


class Block(NamedTuple):
    readme: Path
    line: int
    language: str
    code: str

    def __str__(self) -> str:
        return f"{self.readme.relative_to(REPO)}:{self.line}"


def fenced_blocks(language: str) -> List[Block]:
    blocks = []
    for readme in READMES:
        text = readme.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(2) == language:
                indent = len(match.group(1))
                code = "\n".join(line[indent:] for line in match.group(3).splitlines()) + "\n"
                blocks.append(Block(readme, text[: match.start()].count("\n") + 1, language, code))
    return blocks


PYTHON_BLOCKS = fenced_blocks("python")
BASH_BLOCKS = fenced_blocks("bash")


def clean_env(tmp_path: Path, opik: LocalOpik) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPIK_", "OTEL_"))}
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), OPIK_URL_OVERRIDE=opik.url)
    return env


def test_the_readmes_have_python_blocks():
    assert len(PYTHON_BLOCKS) >= 5 and BASH_BLOCKS


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=str)
def test_python_block(block, tmp_path):
    first_line = block.code.split("\n", 1)[0]
    fragment = FRAGMENT.match(first_line)
    if fragment:
        assert (REPO / fragment.group(1)).is_file(), f"{block} points at a missing file"
        return
    module = PYTEST_MODULE.match(first_line)
    with LocalOpik() as opik:
        if module:
            (tmp_path / module.group(1)).write_text(block.code)
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", module.group(1)]
        else:
            (tmp_path / "block.py").write_text(block.code)
            command = [sys.executable, "block.py"]
        result = subprocess.run(
            command, cwd=tmp_path, env=clean_env(tmp_path, opik),
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, f"{block} failed:\n{result.stdout}\n{result.stderr}"
        assert [r.status for r in opik.requests if r.status >= 300] == [], str(block)
        assert opik.warnings == [], str(block)


PIP_INSTALL_FROM_CHECKOUT = re.compile(r'^pip install (-e )?(\.|"\.\[\w+\]"|/\S+|"opik-otel @ git\+https://)')


def shell_commands(block: Block) -> List[str]:
    commands = []
    for line in block.code.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        commands.extend(part.strip() for part in re.split(r"&&|;", line) if part.strip())
    return commands


@pytest.mark.parametrize("block", BASH_BLOCKS, ids=str)
def test_bash_block(block):
    for command in shell_commands(block):
        if command.startswith("pip install"):
            assert PIP_INSTALL_FROM_CHECKOUT.match(command), f"{block}: {command!r} needs a PyPI release"
        words = shlex.split(command)
        while words and "=" in words[0]:
            words.pop(0)  # VAR=value prefixes
        if words[:1] == ["python"] and len(words) > 1 and words[1].endswith(".py"):
            readme_dir = block.readme.parent
            assert (REPO / words[1]).is_file() or (readme_dir / words[1]).is_file(), f"{block}: {command!r}"
