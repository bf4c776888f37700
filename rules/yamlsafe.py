"""YAML for rule files: the safe loader, duplicate keys refused, every mapping remembering its lines.

A mapping loads as a `Located` dict: `.file`, `.line` (where it starts) and `.line_of(key)` (where a key is),
so that errors can say `bulk.yaml:14: limit: must be a positive number`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rules.errors import RuleSyntaxError

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]


class Located(dict[str, Any]):
    """A YAML mapping with the file and lines it came from (1-based)."""

    file: str | None = None
    line: int | None = None
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)


class _Loader(_Base):  # type: ignore[valid-type,misc]
    source_name: str | None = None


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    loader.flatten_mapping(node)
    out = Located()
    out.file = loader.source_name
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise RuleSyntaxError(f"keys must be text, not {type(key).__name__} ({key!r})",
                                  file=loader.source_name, line=key_node.start_mark.line + 1)
        if key in out:
            raise RuleSyntaxError(
                f"duplicate key (first on line {out.key_lines[key]}); keep one",
                file=loader.source_name, line=key_node.start_mark.line + 1, field=key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[arg-type]
# Dates stay text: the rules parse times themselves, with zones, and never want a naive date object.
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)


def load_yaml(text: str, source: str | None = None) -> Any:
    """Parse one YAML document safely; a syntax error or duplicate key raises RuleSyntaxError with the line."""
    loader = _Loader(text)
    loader.source_name = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise RuleSyntaxError(f"not valid YAML: {e.problem or e}", file=source,
                              line=mark.line + 1 if mark else None) from e
    except yaml.YAMLError as e:
        raise RuleSyntaxError(f"not valid YAML: {e}", file=source) from e
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RuleSyntaxError(f"cannot read the file: {e}", file=str(p)) from e
    return load_yaml(text, str(p))
