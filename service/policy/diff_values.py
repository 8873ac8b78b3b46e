"""Settings and examples of two versions of a policy file, compared value by value in a reviewer's terms
(`textback policy diff`).

A scalar reads `key: old -> new`; a mapping is compared entry by entry with dotted paths
(`states.FL.window: 08:00 to 20:00 -> 08:00 to 21:00`, `limits.per_lead_per_day.value: 4 -> 3`); a list of
mappings with an `id` reads as a mapping by id (`categories.communications.keep_months: 25 -> 30`); any other
list by the entries added, removed and changed (`cites added: "..."`). A `{start, end}` window reads
`08:00 to 20:00`. `internal_notes` are engineering notes the report never shows: only the fact that they
changed is said. Examples are compared by group (`example added (must_match): "..."`, or for a list of cases
`example added: where: FL, local: 2026-06-10T21:00, allowed: false`).
"""

from __future__ import annotations

import difflib
from typing import Any

NO_VALUE = "(none)"
# Header settings shown first, in this order, when they change; the rest follow alphabetically.
FIRST = ("severity", "title", "summary", "rationale", "law", "cites", "citation", "citations", "open_questions")
HIDDEN = "internal_notes"


def text(value: Any) -> str:
    """A scalar as a reviewer reads it: one short word bare, anything longer in quotes."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        words = value.split()
        if len(words) == 1 and len(value) <= 40 and '"' not in value:
            return words[0]
        return '"' + " ".join(words) + '"'
    if isinstance(value, dict | list):
        return readable(value)
    return str(value)


def quoted(value: Any) -> str:
    """Wording, always in quotes (a one-word text still reads as a text)."""
    return NO_VALUE if value is None else '"' + " ".join(str(value).split()) + '"'


def word_changes(before: list[str], after: list[str]) -> str:
    """The words that changed, as `"I" -> "we"`; several changes separated by `; `."""
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    parts = []
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            continue
        old, new = " ".join(before[a1:a2]), " ".join(after[b1:b2])
        parts.append(f'"{old}" -> "{new}"' if old and new else f'added "{new}"' if new else f'removed "{old}"')
    return "; ".join(parts)


def _window(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"start", "end"}


def readable(value: Any) -> str:
    """Any value on one line, without YAML punctuation: `k: v, k: v`; nested mappings in parentheses."""
    if _window(value):
        return f"{text(value['start'])} to {text(value['end'])}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_nested(v)}" for k, v in value.items()) or NO_VALUE
    if isinstance(value, list):
        return ", ".join(_nested(v) for v in value) or NO_VALUE
    return text(value)


def _nested(value: Any) -> str:
    if isinstance(value, dict) and not _window(value):
        return f"({readable(value)})"
    if isinstance(value, list):
        return f"[{readable(value)}]"
    return text(value)


def _atomic(value: Any) -> bool:
    return _window(value) or not isinstance(value, dict | list)


def _by_id(items: list[Any]) -> dict[str, Any] | None:
    """A list of mappings each with a distinct `id`, as a mapping by id (its entries without the id)."""
    if not items or not all(isinstance(i, dict) and isinstance(i.get("id"), str | int) for i in items):
        return None
    keyed = {str(i["id"]): {k: v for k, v in i.items() if k != "id"} for i in items}
    return keyed if len(keyed) == len(items) else None


def _list_changes(path: str, old: list[Any], new: list[Any]) -> list[str]:
    before, after = [readable(v) for v in old], [readable(v) for v in new]
    lines: list[str] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            continue
        if op == "replace" and a2 - a1 == b2 - b1:
            lines += [f"{path} changed: {w} -> {n}" for w, n in zip(before[a1:a2], after[b1:b2], strict=True)]
            continue
        lines += [f"{path} removed: {w}" for w in before[a1:a2] if w not in after]
        lines += [f"{path} added: {n}" for n in after[b1:b2] if n not in before]
    return lines or [f"{path}: same entries, new order"]


def value_changes(path: str, old: Any, new: Any) -> list[str]:
    """What changed between two values of the setting at `path`, one line per changed entry."""
    if old == new:
        return []
    if (old is None or isinstance(old, list)) and (new is None or isinstance(new, list)):
        before, after = old or [], new or []
        keyed_before, keyed_after = _by_id(before), _by_id(after)
        if (keyed_before is not None or not before) and (keyed_after is not None or not after):
            return value_changes(path, keyed_before or {}, keyed_after or {})
        return _list_changes(path, before, after)
    if (old is None or not _atomic(old)) and (new is None or not _atomic(new)):
        was: dict[str, Any] = old or {}
        now: dict[str, Any] = new or {}
        lines: list[str] = []
        for key in [*was, *(k for k in now if k not in was)]:
            where = f"{path}.{key}"
            if key not in now:
                lines.append(f"{where} removed (was {readable(was[key])})")
            elif key not in was:
                lines.append(f"{where} added: {readable(now[key])}")
            else:
                lines += value_changes(where, was[key], now[key])
        return lines
    lines = [f"{path}: {text(old)} -> {text(new)}"]
    if isinstance(old, str) and isinstance(new, str) and len(old.split()) > 8 and len(new.split()) > 8:
        lines.insert(0, f"{path} words: {word_changes(old.split(), new.split())}")  # long text: the edit first
    return lines


def settings(old: dict[str, Any], new: dict[str, Any], own: set[str]) -> list[str]:
    """Every setting outside `own` that changed: the header ones first, then alphabetically."""
    keys = {k for k in set(old) | set(new) if k not in own and old.get(k) != new.get(k)}
    lines: list[str] = []
    for key in [k for k in FIRST if k in keys] + sorted(keys - set(FIRST)):
        if key == HIDDEN:
            lines.append(f"{HIDDEN} changed (engineering notes; the report never shows them)")
        else:
            lines += value_changes(key, old.get(key), new.get(key))
    return lines


def _example_groups(examples: Any) -> dict[str, list[str]]:
    """Examples by group ("" for a plain list of cases), each as one readable line."""
    def item(value: Any) -> str:
        return quoted(value) if isinstance(value, str) else readable(value)

    if isinstance(examples, list):
        return {"": [item(v) for v in examples]}
    groups: dict[str, list[str]] = {}
    for group, values in (examples or {}).items():
        if isinstance(values, dict):
            groups[str(group)] = [f"{quoted(k)}: {item(v)}" for k, v in values.items()]
        elif isinstance(values, list):
            groups[str(group)] = [item(v) for v in values]
        else:
            groups[str(group)] = [item(values)]
    return groups


def example_changes(old: Any, new: Any) -> list[str]:
    """The examples added and removed, by group: `example added (must_match): "..."`."""
    before, after = _example_groups(old), _example_groups(new)
    lines: list[str] = []
    for group in [*before, *(g for g in after if g not in before)]:
        was, now = before.get(group, []), after.get(group, [])
        label = f" ({group})" if group else ""
        lines += [f"example added{label}: {e}" for e in now if e not in was]
        lines += [f"example removed{label}: {e}" for e in was if e not in now]
    return lines
