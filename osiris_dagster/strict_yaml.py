"""Reading the product's YAML files (pipelines, connection profiles, project settings) strictly.

PyYAML keeps the *last* of two equal keys in a mapping without a word, so a pipeline that sets
`path:` twice, or a connection that names `password:` twice, silently runs with a value the user
may not have meant. Here a duplicate key is an error naming where it sits (``steps[1].config.path``)
and both lines. The check walks the composed node tree once before constructing Python objects:
one linear pass, no second parse (a 600-step pipeline stays well under its validation budget).

Merge keys (``<<: *defaults``) stay allowed: overriding a merged key is what they are for.
The C parser is used when PyYAML has it (several times faster on large pipelines).
"""

from __future__ import annotations

from typing import Any

import yaml

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping names the same key twice; ``field`` is its path (``steps[1].config.path``)."""

    def __init__(self, field: str, key: object, line: int, first_line: int, mark: yaml.Mark) -> None:
        super().__init__(
            problem=f"duplicate key '{key}' at line {line} (first at line {first_line})", problem_mark=mark
        )
        self.field = field


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate mapping keys (raises `DuplicateKeyError`)."""
    loader = _BaseLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicates(node, "")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_duplicates(node: yaml.Node, path: str) -> None:
    # Iterative: a deeply nested document must not hit Python's recursion limit.
    stack: list[tuple[yaml.Node, str]] = [(node, path)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key_node, value_node in current.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                line = key_node.start_mark.line + 1
                field = f"{where}.{key}" if where else str(key)
                if key in seen:
                    raise DuplicateKeyError(field, key, line, seen[key], key_node.start_mark)
                seen[key] = line
                stack.append((value_node, field))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(current.value))
