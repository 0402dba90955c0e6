"""Reading a config's YAML, safely: PyYAML's SafeLoader (no tag builds an object), 1e-3 read
as a float, a key given twice refused, anchors and aliases that expand past a config's size
(the "billion laughs") refused, and every YAML error turned into a ``UserError`` that names the
line and column and the fix. Also the reading of a ``--set`` value and the writing of a
resolved config.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tlkit.config.schema import Config
from tlkit.errors import UserError


class DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"{key!r} on lines {first} and {second}")
        self.key, self.first, self.second = key, first, second


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 (no dot, which YAML 1.1 requires) as a float, and refuses a
    key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: the base class says so
                break
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

# The concept document prints schedule entries as `- epoch: 3, unfreeze: "last_block"`.
_FLOW_PAIR_RE = re.compile(r"^(\s*)-\s+(\w+)\s*:\s*([^,{}\[\]]+?)\s*,\s*(\w+)\s*:\s*(.+?)\s*$")


def _yaml_error(path: str, text: str, e: yaml.YAMLError) -> UserError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    lines = text.splitlines()
    # Look for the concept's two-keys-on-one-line form near the error.
    for i in ([line - 1] if line else []) + list(range(len(lines))):
        if 0 <= i < len(lines):
            m = _FLOW_PAIR_RE.match(lines[i])
            if m:
                k1, v1, k2, v2 = m.group(2), m.group(3), m.group(4), m.group(5)
                v1, v2 = v1.strip().strip("\"'"), v2.strip().strip("\"'")
                fix = f"{m.group(1)}- {{{k1}: {v1}, {k2}: {v2}}}"
                return UserError(
                    f"{path}: line {i + 1}, column {len(m.group(1)) + 3}: "
                    f"{lines[i].strip()!r} is not valid YAML (two keys on one list line); "
                    f"fix: write it as a mapping in braces: {fix.strip()}"
                )
    where = f"line {line}, column {col}" if line else "somewhere"
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    snippet = f": {lines[line - 1].strip()!r}" if line and line <= len(lines) else ""
    return UserError(
        f"{path}: invalid YAML at {where}{snippet}: {problem}\n"
        "  fix: check the indentation and quoting on that line; a list entry with several keys "
        "is written - {key: value, key2: value2}"
    )


# A config is a few dozen values; anchors and aliases nested inside each other can expand a
# small file into billions (the "billion laughs"), which validation would walk one by one.
MAX_YAML_VALUES = 100_000


def _expanded_size(x: Any, memo: dict[int, int], active: set[int]) -> int:
    if not isinstance(x, (dict, list)):
        return 1
    key = id(x)
    if key in memo:
        return memo[key]
    if key in active:
        raise ValueError("an alias refers to the value that holds it")
    active.add(key)
    items = [v for kv in x.items() for v in kv] if isinstance(x, dict) else x
    n = 1
    for item in items:
        n = min(n + _expanded_size(item, memo, active), MAX_YAML_VALUES + 1)
    active.discard(key)
    memo[key] = n
    return n


def parse_yaml(text: str, path: str = "<config>") -> Any:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except DuplicateKey as e:
        raise UserError(
            f"{path}: the key {e.key!r} is given twice in one section, on lines {e.first} and "
            f"{e.second}; YAML would keep only the second silently. Merge the two into one "
            "(e.g. one transfer_config: block)") from None
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise UserError(
            f"{path}: {where}: {e.problem}; tlkit loads YAML safely and never builds objects from "
            "tags\n  fix: remove the !tag and write plain values"
        ) from None
    except yaml.YAMLError as e:
        raise _yaml_error(path, text, e) from None
    except RecursionError:
        raise UserError(f"{path}: the YAML is nested too deeply to read; a config needs a few "
                        "levels: check the brackets and indentation") from None
    except Exception as e:  # noqa: BLE001
        # PyYAML's constructors for explicit tags fail with whatever Python raises on a bad
        # value (!!float x: ValueError; !!timestamp 2001-12-14:: AttributeError)
        raise UserError(f"{path}: a tagged value cannot be read ({type(e).__name__}: {e}); "
                        "fix: remove the !!tag and write a plain value") from None
    try:
        n = _expanded_size(data, {}, set())
    except (ValueError, RecursionError) as e:
        reason = str(e) if isinstance(e, ValueError) else "it is nested too deeply"
        raise UserError(f"{path}: the YAML cannot be used as a config: {reason}; write the "
                        "values out plainly") from None
    if n > MAX_YAML_VALUES:
        raise UserError(f"{path}: the YAML expands to more than {MAX_YAML_VALUES:,} values "
                        "(anchors and aliases repeated inside each other); a config holds a few "
                        "dozen: write the values out plainly")
    return data


def parse_value(text: str) -> Any:
    """A --set value, read as a YAML scalar or flow collection (so 3e-4 is a float)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506
    except Exception:  # noqa: BLE001 - not YAML (or a bad !!tag): the value is the text itself
        return text


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
