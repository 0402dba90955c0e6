"""The shape a newcomer can hold in mind: no function in src/ over 80 lines unless it says why,
and the training loop's entry point short, with few parameters."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from tlkit.train.loop import fit

SRC = Path(__file__).resolve().parents[1] / "src" / "tlkit"


def test_long_functions_say_why():
    unexplained = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                body = "\n".join(text.splitlines()[node.lineno - 1:node.end_lineno])
                if length > 80 and "over 80 lines" not in body:
                    unexplained.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} "
                                       f"({length} lines)")
    assert unexplained == []


def test_the_loop_is_short():
    lines, _ = inspect.getsourcelines(fit)
    assert len(lines) <= 120
    assert len(inspect.signature(fit).parameters) <= 8
