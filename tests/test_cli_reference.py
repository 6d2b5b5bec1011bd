"""CLI_REFERENCE.md documents exactly the flags each command defines (read from its argparse parser)."""

from __future__ import annotations

import pytest
from cli_flags import COMMANDS, DOC, documented, read_flags, table


@pytest.mark.parametrize("name,argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_reference_matches_argparse(name, argv):
    doc = DOC.read_text()
    written = documented(name, doc)
    assert written is not None, f"CLI_REFERENCE.md has no flags block for {name}"
    assert written == table(read_flags(argv)), (
        f"CLI_REFERENCE.md is out of date for {name}: run `uv run python tests/cli_flags.py --write`"
    )
