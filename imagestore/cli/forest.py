"""The parent forest drawn as text for ``tree``."""

from __future__ import annotations

from imagestore.moby.digest import truncate_id
from imagestore.service.listing import TreeNode


def draw_forest(roots: list[TreeNode]) -> list[str]:
    """Text drawing. A chain of only children stays in one column (so 20+ deep chains stay
    readable); only a branch point indents, with ├── / └── before each branch."""
    lines: list[str] = []

    def label(node: TreeNode) -> str:
        short = truncate_id(node.id)
        return f"{short}  {', '.join(node.tags)}" if node.tags else short

    for i, root in enumerate(roots):
        if i:
            lines.append("")  # a blank line between trees: a root never reads as a child
        stack = [(root, "", "")]  # (node, prefix of its line, prefix of the lines below it)
        while stack:
            node, first, rest = stack.pop()
            lines.append(first + label(node))
            while len(node.children) == 1:
                node = node.children[0]
                lines.append(rest + label(node))
            last = len(node.children) - 1
            for j in range(last, -1, -1):  # pushed last first: drawn in order
                stack.append((node.children[j], rest + ("└── " if j == last else "├── "),
                              rest + ("    " if j == last else "│   ")))
    return lines


__all__ = ["draw_forest"]
