"""YAML text in, plain data out: the strict loader every config file goes through.

Owns what we refuse before any schema sees the data: duplicate keys, more than MAX_NODES
nodes, nesting deeper than MAX_DEPTH, as written or with aliases expanded (a deeper
document would exhaust the recursion of the composer, or of whatever walks the result),
more than MAX_ALIASES aliases, aliases that expand the document past MAX_EXPANDED_NODES nodes or
refer to a node that contains them (billion laughs), keys that YAML reads as something
other than a string (`yes:`, `1:`, `[a]:`), merge keys, integers too long for int(), and
strings holding a NUL or half of a UTF-16 pair (`"\\ud800"`). Syntax errors become one
`Problem` naming the line and column. Imports yaml and errors only.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from gateway.errors import ConfigError, Problem

__all__ = ["load_yaml"]

MAX_ALIASES = 64
#: collections inside collections: a config needs about 8; Python's recursion ends near 300
MAX_DEPTH = 64
#: nodes in the document as written: pure-Python YAML takes ~30 us a node, in a thread
#: that shares the GIL with the data plane's loop (1 MiB of `[1,1,1,...]` parsed for 8 s,
#: the loop's round trips 6x slower meanwhile); a config needs about 30 bytes a node, so
#: 1 MiB of real config is ~35,000
MAX_NODES = 50_000
#: nodes in the document with every alias expanded: a few aliases nested in each other
#: multiply (8 levels of 8 make 16 million), and whatever walks the result pays for them
MAX_EXPANDED_NODES = 100_000
#: the longest integer as written (Python's int() refuses past 4,300 digits)
MAX_NUMBER_CHARS = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
#: the first line of a conflict git's merge leaves in a file (`<<<<<<< HEAD`)
_CONFLICT = re.compile(r"^<{7}(?: |$)", re.MULTILINE)


def load_yaml(text: str, source: str) -> Any:
    """The document in `text` as plain data; raises ConfigError naming `source`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if mark and re.search(r":\s*\[[0-9A-Fa-f:.]*\]:\d", text.splitlines()[mark.line]
                              if mark.line < len(text.splitlines()) else ""):
            # `listen: [::1]:8080` reads as a YAML list: the address must be quoted
            problem += ' (an IPv6 address and port must be quoted: listen: "[::1]:8080")'
        if "found character '\\t'" in problem:  # (an editor that indents with tabs)
            problem += " (a tab: YAML indents and separates with spaces only; replace it with spaces)"
        if problem == "but found another document":  # (PyYAML's words for a second `---`)
            problem = ("a second YAML document starts here (---): a config file holds one; "
                       "merge them or remove the line")
        conflict = _CONFLICT.search(text)
        if conflict is not None:  # (a `git merge` or `pull` that stopped: its markers)
            line = text.count("\n", 0, conflict.start()) + 1
            raise ConfigError([Problem("", (
                f"{source}: unresolved git merge conflict at line {line} (git's <<<<<<< "
                f"======= >>>>>>> markers): resolve the merge, then `killgate check` the "
                f"file (YAML syntax error{where}: {problem})"))]) from None
        raise ConfigError([Problem("", f"{source}: YAML syntax error{where}: {problem}")]) from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and caps alias expansion (billion laughs)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases: refusing to expand")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise yaml.MarkedYAMLError(
                problem=f"more than {MAX_NODES} nodes: refusing to parse further",
                problem_mark=self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.MarkedYAMLError(
                    problem=f"nested deeper than {MAX_DEPTH} levels",
                    problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and self._aliases:
            _expanded_size(node)
        return node

    def construct_yaml_int(self, node: Any) -> Any:
        # (int() refuses past 4,300 digits with a ValueError that is no YAMLError: it came
        # out of `killgate check` as a traceback; no setting takes more than a few digits)
        text = str(node.value)
        if len(text) > MAX_NUMBER_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a number of more than {MAX_NUMBER_CHARS} characters",
                node.start_mark)
        value = super().construct_yaml_int(node)
        # (YAML 1.1 reads `weight: 010` as 8 where `090` is 90, and `1:30` as 90: a split
        # written with padded weights went 8/90, silently)
        digits = text.lstrip("+-").replace("_", "")
        if ":" in digits:
            raise yaml.constructor.ConstructorError(
                None, None, f"{text!r} is read by YAML as the base-60 number {value}: "
                "write the number itself, or put text in quotes", node.start_mark)
        if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
            raise yaml.constructor.ConstructorError(
                None, None, f"{text!r} is read by YAML as the octal number {value}: "
                "write it without the leading 0", node.start_mark)
        return value

    def construct_yaml_str(self, node: Any) -> Any:
        # (a "\0" escape: no path, header or name can hold one; a key file's path with it
        # came out of check, and a state path out of serve, as a ValueError traceback)
        value = super().construct_yaml_str(node)
        if "\0" in value:
            raise yaml.constructor.ConstructorError(
                None, None, "a string holding a NUL character (\\0)", node.start_mark)
        if _SURROGATE.search(value):
            # a "\ud83d\udea8" pair (JSON's way to write a character beyond U+FFFF, which
            # YAML reads as two halves) is the character; a lone half ("\ud800") is none:
            # no file name can hold one, and a path with it came out of check and serve as a
            # UnicodeEncodeError traceback
            try:
                return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
            except UnicodeDecodeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a string holding a \\ud800-\\udfff escape without its other "
                    "half (a UTF-16 pair is \\ud800-\\udbff then \\udc00-\\udfff): write the "
                    "character itself, or \\U and its 8 hex digits", node.start_mark) from None
        return value

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            mark = key_node.start_mark
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(
                    None, None, f"merge keys (<<) are not supported (line {mark.line + 1}): "
                    "write the keys out", mark)
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                # (every key of the schema is a string: `yes:`, `1.10:` or `[a]:` is one
                # YAML reads as something else; a list or mapping key was a TypeError)
                shown = (repr(key_node.value) if isinstance(key_node, yaml.ScalarNode)
                         else "a list" if isinstance(key_node, yaml.SequenceNode)
                         else "a mapping")
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {shown} (line {mark.line + 1}) is not read as a "
                    "string: put it in quotes", mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:str", _StrictLoader.construct_yaml_str)


def _expanded_size(root: Any) -> int:
    """Nodes in the tree under `root` with aliases expanded (each anchored node counted
    once per reference, its size and height computed once); refuses past
    MAX_EXPANDED_NODES, deeper than MAX_DEPTH once expanded (an anchor nesting another
    nests their depths: the text's own depth is capped as it is composed), and a node
    that contains itself."""
    known: dict[int, tuple[int, int]] = {}  # id -> (nodes, height)
    busy: set[int] = set()

    def too_deep() -> yaml.YAMLError:
        return yaml.YAMLError(f"aliases nest the document deeper than {MAX_DEPTH} levels")

    def walk(node: Any, level: int) -> tuple[int, int]:
        key = id(node)
        got = known.get(key)
        if got is not None:
            if level + got[1] - 1 > MAX_DEPTH:
                raise too_deep()
            return got
        if key in busy:
            raise yaml.YAMLError("an alias refers to a node that contains it")
        if level > MAX_DEPTH:
            raise too_deep()
        busy.add(key)
        n, h = 1, 1
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [c for pair in node.value for c in pair]
        else:
            children = []
        for child in children:
            cn, ch = walk(child, level + 1)
            n += cn
            h = max(h, ch + 1)
            if n > MAX_EXPANDED_NODES:
                raise yaml.YAMLError(f"aliases expand the document past {MAX_EXPANDED_NODES} "
                                     "nodes: refusing to expand")
        busy.discard(key)
        known[key] = (n, h)
        return n, h

    return walk(root, 1)[0]
