"""Strict YAML for configs and experiment files: ``safe_load`` semantics with three changes.

1. A key twice in one mapping is an error (``<<`` merged keys may be overridden).
2. A document that contains itself, or whose aliases add more than :data:`MAX_ALIAS_NODES` nodes once expanded,
   is an error (alias bombs), checked in time linear in the distinct nodes.
3. Numbers follow YAML 1.2: PyYAML implements YAML 1.1, where ``12:00:00`` is the base-60 integer 43200 and
   ``1:30`` is 90, so a Slurm ``time: 12:00:00`` would silently become 30 days. Here such scalars stay strings;
   every other int/float form (``1_000``, ``0x1f``, ``1e-6``, ``.inf``) reads as before.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_ALIAS_NODES = 100_000  # nodes that aliases may add to a document once expanded
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(distinct nodes, nodes once every alias is expanded) of a composed document; a recursive alias is a
    ComposerError. Linear in the distinct nodes (iterative: deep documents do not exhaust the stack)."""
    size: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            visiting.discard(id(node))
            size[id(node)] = 1 + sum(size[id(k)] for k in _children(node))
            continue
        if id(node) in size:
            continue
        visiting.add(id(node))
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in visiting:
                raise yaml.composer.ComposerError(None, None, "a recursive alias (a node that contains itself)", kid.start_mark)
            if id(kid) not in size:
                stack.append((kid, False))
    return len(size), size[id(root)]


class StrictLoader(yaml.SafeLoader):
    """``safe_load`` semantics; a key twice in one mapping is an error (``<<`` merged keys may be overridden), and
    so is a document that contains itself or whose aliases add more than :data:`MAX_ALIAS_NODES` nodes."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        distinct, expanded = expanded_size(node)
        if expanded - distinct > MAX_ALIAS_NODES:
            raise yaml.composer.ComposerError(None, None, f"aliases expand it to {expanded:,} nodes (limit +{MAX_ALIAS_NODES:,})")
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first on line {seen[key] + 1})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` through :class:`StrictLoader` (duplicate keys and alias bombs are YAMLErrors)."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
# PyYAML's YAML 1.1 int and float patterns without their base-60 alternatives (the ``[0-9]+(:[0-5]?[0-9])+`` forms).
_INT_12 = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$", re.X)
_FLOAT_12 = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
    re.X,
)
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(_INT, _INT_12, list("-+0123456789"))
StrictLoader.add_implicit_resolver(_FLOAT, _FLOAT_12, list("-+0123456789."))
