"""The one YAML reader: plain data only, no duplicate keys, no alias bombs.

Why: ``yaml.safe_load`` already refuses code, but it keeps the last of two equal keys without a word (a
setting silently lost) and expands aliases into shared objects whose size grows exponentially with the
file's (a few hundred bytes become billions of entries as soon as they are copied, compared or written
back). Both are refused here, before anything is built from the document, as a ``yaml.YAMLError`` whose
message names the key and its lines, so every caller's existing "invalid YAML" message applies.
"""
from __future__ import annotations

from typing import Any

import yaml

__all__ = ["load", "MAX_NODES"]

# Nodes of the document with every alias expanded; a settings file has tens, a label table thousands.
MAX_NODES = 100_000


class _Refused(yaml.YAMLError):
    """A document this reader will not build (duplicate key, alias expansion too large)."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):  # the node's own keys (a merged ``<<`` mapping may be overridden)
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class gives its own error for an unhashable key
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _Refused(f"duplicate key {key!r} on lines {seen[key]} and {line}")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded (aliases share node objects)."""
    sizes: dict[int, int] = {}
    order: list[yaml.Node] = []
    stack, seen = [root], set()
    while stack:  # post-order without recursion (deeply nested documents must not overflow the stack)
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        stack.extend(_children(node))
    for node in reversed(order):
        sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes.get(id(c), 1) for c in _children(node)))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load(text: str) -> Any:
    """``yaml.safe_load(text)``, but a duplicate key or an alias expansion beyond ``MAX_NODES`` nodes is a
    ``yaml.YAMLError`` (naming the key and its lines), raised before the document is built."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise _Refused(f"aliases expand to more than {MAX_NODES} entries (refused before expanding)")
        return loader.construct_document(node)
    finally:
        loader.dispose()
