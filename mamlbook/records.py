"""Typed JSON records: every result file is read into a dataclass and written from one.

A chapter that reads `result.evaluation.methods["MAML (surrogate)"].mean[1]` cannot silently pick
the wrong number: a field that is missing, renamed, of the wrong type or unknown to the class is a
`RecordError` naming the file and the field's path, so the book's build fails instead of printing
a guess. Each record class carries a format version (`FORMAT`), written into its file as `format`.

The core layer: standard library only, so every layer can describe its own files with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

T = TypeVar("T")

__all__ = [
    "Machine",
    "Record",
    "RecordError",
    "cpu_model",
    "from_data",
    "read_json",
    "read_record",
    "record_from_data",
    "to_data",
    "write_record",
]


class RecordError(ValueError):
    """A result file does not match its record class: names the file and the field."""


class Record:
    """Base of a top-level record: a dataclass written to one JSON file with a format version."""

    FORMAT: ClassVar[int] = 1


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_data(cls: Any, data: Any, where: str = "$") -> Any:
    """Convert parsed JSON `data` into `cls` (a dataclass, list[...], dict[str, ...], a union or a scalar).

    `where` is the dotted path used in error messages, e.g. `medical.json: table.MAML`.
    """
    origin = typing.get_origin(cls)
    if cls is Any:
        return data
    if origin in (Union, types.UnionType):
        options = typing.get_args(cls)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return from_data(option, data, where)
            except RecordError as error:
                errors.append(str(error))
        raise RecordError(errors[0] if len(errors) == 1 else f"{where}: matches none of {cls} ({'; '.join(errors)})")
    if origin is list:
        (item,) = typing.get_args(cls) or (Any,)
        if not isinstance(data, list):
            raise RecordError(f"{where}: expected a list, found {type(data).__name__}")
        return [from_data(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
    if origin is tuple:
        args = typing.get_args(cls)
        if not isinstance(data, list):
            raise RecordError(f"{where}: expected a list, found {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_data(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
        if len(args) != len(data):
            raise RecordError(f"{where}: expected {len(args)} items, found {len(data)}")
        return tuple(from_data(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data, strict=True)))
    if origin is dict:
        key_type, value_type = typing.get_args(cls) or (str, Any)
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected an object, found {type(data).__name__}")
        return {k: from_data(value_type, v, f"{where}.{k}") for k, v in data.items()}
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected an object ({cls.__name__}), found {type(data).__name__}")
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        keys = {_json_name(name): name for name in fields}
        unknown = sorted(set(data) - set(keys) - ({"format"} if issubclass(cls, Record) else set()))
        if unknown:
            raise RecordError(
                f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"(not in {cls.__name__}; renamed, or a newer format?)"
            )
        values = {}
        for key, name in keys.items():
            field = fields[name]
            if key not in data:
                if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING:
                    continue
                raise RecordError(f"{where}: missing field {key!r} ({cls.__name__})")
            values[name] = from_data(hints[name], data[key], f"{where}.{key}")
        return cls(**values)
    if cls is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise RecordError(f"{where}: expected a number, found {data!r}")
        return float(data)
    if cls is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise RecordError(f"{where}: expected an integer, found {data!r}")
        return data
    if cls in (str, bool):
        if not isinstance(data, cls):
            raise RecordError(f"{where}: expected {cls.__name__}, found {data!r}")
        return data
    if cls is type(None):
        if data is not None:
            raise RecordError(f"{where}: expected null, found {data!r}")
        return None
    raise TypeError(f"{where}: records cannot hold {cls!r}")


def _json_name(name: str) -> str:
    """Python names for JSON keys that are not identifiers: a trailing underscore is dropped."""
    return name[:-1] if name.endswith("_") else name


def to_data(value: Any) -> Any:
    """The JSON form of a record (non-finite floats as null, as JSON has no infinity)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"format": type(value).FORMAT} if isinstance(value, Record) else {}
        for field in dataclasses.fields(value):
            out[_json_name(field.name)] = to_data(getattr(value, field.name))
        return out
    if isinstance(value, Mapping):
        return {str(k): to_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def read_json(path: str | os.PathLike, missing: str = "") -> Any:
    """A result file's parsed JSON; a missing file or bad JSON fails naming the file (and `missing`'s advice)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist{missing}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RecordError(f"{path}: not valid JSON ({error})") from None


def read_record(cls: type[T], path: str | os.PathLike) -> T:
    """Read `path` as a `cls` record, checking its format version; errors name the file and field."""
    return record_from_data(cls, read_json(path), str(path))


def record_from_data(cls: type[T], data: Any, source: str) -> T:
    """`from_data` for a top-level record: checks `format` against `cls.FORMAT`."""
    expected = getattr(cls, "FORMAT", None)
    if expected is not None:
        found = data.get("format") if isinstance(data, dict) else None
        if found != expected:
            raise RecordError(
                f"{source}: format {found!r}, but {cls.__name__} reads format {expected}"
                + (" (a file from before typed records: rewrite it with its study)" if found is None else "")
            )
    return from_data(cls, data, source)


def write_record(record: Any, path: str | os.PathLike, indent: int | None = 1) -> Path:
    """Write a record as JSON atomically (a partial file, then a rename): a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(to_data(record), indent=indent) + "\n")
    os.replace(partial, path)
    return path


@dataclasses.dataclass(frozen=True)
class Machine:
    """What ran a result: enough to tell two machines' timings apart."""

    platform: str
    processor: str
    cpu_count: int
    torch: str
    torch_threads: int
    python: str | None = None
    gpu: str | None = None
    cuda_device: str | None = None
    cpu_model: str | None = None
    cpu_capability: str | None = None
    load_average_at_start: list[float] | None = None


def cpu_model() -> str | None:
    """The CPU's model name (Linux), recorded beside every timing: CPUs differ between machines."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
