"""Arrow schemas for the exported events, derived from the event models themselves.

Every file of one event type gets the same columns whatever its rows hold (an empty `scores`
map, say), so SQL over many files sees one table. The columns are the event's own fields, less
`type` (the folder says it), plus where the event sits in the log.
"""

from __future__ import annotations

import types
from datetime import datetime
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel

POSITION_COLUMNS = [
    pa.field("kafka_topic", pa.string(), nullable=False),
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
]
EXCLUDED = frozenset({"type"})

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of a model field's annotation; a new kind of field must be taught here."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if origin is Literal:
        return arrow_type(type(args[0]))
    if origin in (Union, types.UnionType) and type(None) in args:
        [present] = [arg for arg in args if arg is not type(None)]
        return arrow_type(present)
    if origin is list:
        return pa.list_(arrow_type(args[0]))
    if origin is dict:
        return pa.map_(arrow_type(args[0]), arrow_type(args[1]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct([pa.field(name, arrow_type(f.annotation)) for name, f in annotation.model_fields.items()])
    raise TypeError(f"no Arrow type for {annotation!r}: add one to {__name__}")


@cache
def event_schema(model: type[BaseModel]) -> pa.Schema:
    """The columns of one event type's files; only an optional field (`X | None`) may be null."""
    own = [
        pa.field(name, arrow_type(field.annotation), nullable=type(None) in get_args(field.annotation))
        for name, field in model.model_fields.items()
        if name not in EXCLUDED
    ]
    return pa.schema(own + POSITION_COLUMNS)
