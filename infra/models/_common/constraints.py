"""Stop texts and JSON constraints for steno's local models, in plain Python (no Triton imports).

`stop` and `guided_decoding` are vLLM sampling parameters (see inference_bridge/sampling.py);
the models read them here so that their meaning is one piece of code, testable without Triton.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

Schema = dict[str, Any]


def stops(sampling: dict[str, Any]) -> list[str]:
    """The `stop` parameter as a list of non-empty texts (vLLM takes a string or a list)."""
    value = sampling.get("stop") or []
    listed = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(text, str) for text in listed):
        raise ValueError(f"sampling parameter 'stop' must be a string or a list of strings: {value!r}")
    return [text for text in listed if text]


def cut_at_stop(tokens: Sequence[str], stop: Sequence[str]) -> list[str]:
    """The tokens up to (not including) the earliest stop text, which may span tokens: the token
    it begins in is shortened to the text before it."""
    text = "".join(tokens)
    found = [index for index in (text.find(s) for s in stop) if index >= 0]
    if not found:
        return list(tokens)
    end, kept, at = min(found), [], 0
    for token in tokens:
        if at + len(token) > end:
            if end > at:
                kept.append(token[: end - at])
            break
        kept.append(token)
        at += len(token)
    return kept


def guided_json(sampling: dict[str, Any]) -> Schema | None:
    """The JSON Schema the reply must satisfy: {} for any JSON object, None when unconstrained."""
    guided = sampling.get("guided_decoding")
    if not guided:
        return None
    if not isinstance(guided, dict) or not ({"json", "json_object"} & guided.keys()):
        raise ValueError(f"guided_decoding supports 'json' (a JSON Schema) and 'json_object' only: {guided!r}")
    schema = guided.get("json")
    if isinstance(schema, str):
        schema = json.loads(schema)
    return dict(schema) if isinstance(schema, dict) else {"type": "object"}


def instance(schema: Schema, text: str, root: Schema | None = None) -> Any:
    """A deterministic document valid against `schema`: strings are `text`, numbers their minimum
    (or 0), arrays hold their minimum number of items (at least one), objects every property."""
    root = schema if root is None else root
    if "$ref" in schema:
        return instance(_resolve(root, schema["$ref"]), text, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            return instance(schema[combinator][0], text, root)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return _of_type(kind, schema, text, root)


def _of_type(kind: str, schema: Schema, text: str, root: Schema) -> Any:
    if kind == "object":
        properties = schema.get("properties", {})
        if not properties:
            return {"text": text}
        return {name: instance(sub, text, root) for name, sub in properties.items()}
    if kind == "array":
        return [instance(schema.get("items", {}), text, root) for _ in range(max(schema.get("minItems", 1), 1))]
    if kind == "string":
        return text[: schema.get("maxLength", len(text))].ljust(schema.get("minLength", 0), ".")
    if kind in ("integer", "number"):
        low: float = schema["minimum"] if "minimum" in schema else schema.get("exclusiveMinimum", -1) + 1
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return True
    return None


def _resolve(root: Schema, ref: str) -> Schema:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $refs (#/...) are supported: {ref!r}")
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    resolved: Schema = node
    return resolved
