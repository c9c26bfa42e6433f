"""Typed records: a result file whose field is missing, renamed, unknown or of the wrong type fails,
naming the file and the field; and every file the book reads under book/results loads through its record."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mamlbook.bench.records import ScalingResult
from mamlbook.bench.runner import read_rows
from mamlbook.records import Record, RecordError, from_data, read_record, record_from_data, to_data, write_record
from mamlbook.reports.records import read_eval, read_lake, read_metrics, read_run_note
from mamlbook.studies import RESULT_TYPES, load_result


# ----- the generic machinery, on records made up for the test -----
@dataclass(frozen=True)
class Point:
    x: float
    label: str
    count: int = 0


@dataclass(frozen=True)
class Inner:
    values: list[float]
    by_name: dict[str, Point]
    grid: list[list[float | None]]
    maybe: float | None = None


@dataclass(frozen=True, kw_only=True)
class Doc(Record):
    FORMAT: ClassVar[int] = 3

    name: str
    inner: Inner
    rows: list[Point]
    pair: tuple[int, str]
    from_: str = "here"  # a JSON key that is a Python keyword
    extra: dict[str, Any] = field(default_factory=dict)


def make_doc() -> Doc:
    return Doc(
        name="doc",
        inner=Inner(
            values=[1.0, 2.5],
            by_name={"a": Point(0.5, "first", 2), "b": Point(-1.0, "second")},
            grid=[[1.0, None], [0.25, 3.0]],
        ),
        rows=[Point(1.0, "one")],
        pair=(7, "seven"),
    )


def written(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(data))
    return path


def test_a_record_round_trips_through_its_json_form_and_its_file(tmp_path):
    doc = make_doc()
    data = to_data(doc)
    assert data["format"] == 3 and data["from"] == "here" and "from_" not in data
    assert data["inner"]["by_name"]["a"] == {"x": 0.5, "label": "first", "count": 2}
    assert data["pair"] == [7, "seven"] and data["inner"]["grid"] == [[1.0, None], [0.25, 3.0]]
    assert record_from_data(Doc, data, "doc") == doc
    path = write_record(doc, tmp_path / "sub" / "doc.json")
    assert path.read_text().endswith("\n") and json.loads(path.read_text()) == data
    assert read_record(Doc, path) == doc


def test_a_missing_field_is_named_by_its_dotted_path_and_file(tmp_path):
    data = to_data(make_doc())
    del data["inner"]["by_name"]["b"]["label"]
    path = written(tmp_path, data)
    with pytest.raises(RecordError, match=r"missing field 'label' \(Point\)") as error:
        read_record(Doc, path)
    assert str(path) in str(error.value) and "inner.by_name.b" in str(error.value)
    # a field with a default may be left out: older files stay readable
    data = to_data(make_doc())
    del data["inner"]["by_name"]["a"]["count"], data["from"], data["inner"]["maybe"], data["extra"]
    doc = record_from_data(Doc, data, "doc")
    assert doc.inner.by_name["a"] == Point(0.5, "first", 0) and doc.from_ == "here"
    assert doc.inner.maybe is None and doc.extra == {}


def test_an_unknown_or_renamed_field_fails_rather_than_being_dropped(tmp_path):
    data = to_data(make_doc())
    data["rows"][0]["name"] = data["rows"][0].pop("label")  # renamed
    with pytest.raises(RecordError, match=r"rows\[0\]: unknown field name \(not in Point") as error:
        read_record(Doc, written(tmp_path, data))
    assert str(tmp_path / "doc.json") in str(error.value)
    data = to_data(make_doc())
    data["inner"]["surprise"] = 1
    with pytest.raises(RecordError, match=r"inner: unknown field surprise"):
        record_from_data(Doc, data, "doc.json")
    data = to_data(make_doc())
    data["inner"]["format"] = 1  # only a top-level record carries a format
    with pytest.raises(RecordError, match="unknown field format"):
        record_from_data(Doc, data, "doc.json")


@pytest.mark.parametrize(
    "where, value, message",
    [
        (("rows", 0, "x"), "1.5", "expected a number, found '1.5'"),
        (("rows", 0, "x"), True, "expected a number, found True"),
        (("rows", 0, "x"), None, "expected a number, found None"),
        (("rows", 0, "count"), True, "expected an integer, found True"),
        (("rows", 0, "count"), 2.0, "expected an integer, found 2.0"),
        (("rows", 0, "label"), 3, "expected str, found 3"),
        (("inner", "values"), {"a": 1.0}, "expected a list, found dict"),
        (("inner", "by_name"), [], "expected an object, found list"),
        (("inner", "by_name", "a"), 1.0, r"expected an object \(Point\), found float"),
        (("pair",), [1, "a", 2], "expected 2 items, found 3"),
        (("inner", "grid", 0, 0), "x", "expected a number"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(where, value, message):
    data = to_data(make_doc())
    target = data
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    dotted = "doc.json" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in where)
    with pytest.raises(RecordError, match=message) as error:
        record_from_data(Doc, data, "doc.json")
    assert str(error.value).startswith(dotted + ":"), "the file, then the field's path"


def test_numbers_an_int_where_a_float_is_expected_and_null_where_none_is_allowed():
    assert from_data(float, 2) == 2.0 and isinstance(from_data(float, 2), float)
    assert from_data(float | None, None) is None and from_data(float | None, 1) == 1.0
    assert from_data(list[float | None], [1, None, 2.5]) == [1.0, None, 2.5]
    data = to_data(make_doc())
    data["inner"]["maybe"] = None
    assert record_from_data(Doc, data, "doc").inner.maybe is None
    data["inner"]["maybe"] = 0.5
    assert record_from_data(Doc, data, "doc").inner.maybe == 0.5
    with pytest.raises(RecordError, match="matches none of"):
        from_data(int | str, 1.5, "x")


def test_non_finite_floats_are_written_as_null():
    assert to_data([1.0, math.inf, -math.inf, math.nan]) == [1.0, None, None, None]
    assert json.dumps(to_data({"a": math.inf})) == '{"a": null}'


def test_a_format_other_than_the_records_or_none_at_all_fails(tmp_path):
    data = to_data(make_doc())
    data["format"] = 2
    with pytest.raises(RecordError, match=r"format 2, but Doc reads format 3") as error:
        read_record(Doc, written(tmp_path, data))
    assert str(tmp_path / "doc.json") in str(error.value)
    del data["format"]
    with pytest.raises(RecordError, match=r"format None, but Doc reads format 3 \(a file from before typed records"):
        read_record(Doc, written(tmp_path, data))


def test_a_file_that_is_not_json_or_not_there_is_named(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text('{"name": ')
    with pytest.raises(RecordError, match="not valid JSON") as error:
        read_record(Doc, path)
    assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        read_record(Doc, tmp_path / "nothing.json")


def test_write_record_is_atomic_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_record(make_doc(), tmp_path / "doc.json")
    before = path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"], "no .partial left behind"
    broken = dataclasses.replace(make_doc(), extra={"oops": object()})  # not JSON
    with pytest.raises(TypeError):
        write_record(broken, path)
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]
    write_record(dataclasses.replace(make_doc(), name="new"), path)
    assert read_record(Doc, path).name == "new" and not path.with_suffix(".json.partial").exists()


# ----- every file under book/results, through its reader -----
RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"

# Files under book/results that are not JSON results, by name, with why no record reads them.
NOT_RESULTS = {
    "checkpoint.pt": "model weights (torch.save), read by mamlbook.train.checkpoint.load_checkpoint",
    "*.log": "a study's console output, kept beside its result for the record; nothing reads it",
    "*.partial": "a write in progress (write_record renames it when done); never read",
}


def not_a_result(path: Path) -> str | None:
    """Why `path` is not read through a record, or None when it must be."""
    for pattern, why in NOT_RESULTS.items():
        if path.match(pattern):
            return why
    return None


def read_config(path: Path) -> Any:
    """A run folder's config.json, through the class that trains from it (a Trainer's or the RL trainer's).

    Nav2DConfig.from_dict drops keys it does not know, so the test also checks that every key in the
    file comes back unchanged, and that keys the file lacks (added later) are at their defaults.
    """
    from mamlbook.rl.trainer import MODEL as NAV2D_MODEL
    from mamlbook.rl.trainer import Nav2DConfig
    from mamlbook.train.runconfig import TrainConfig

    data = json.loads(path.read_text())
    cls = Nav2DConfig if data.get("model") == NAV2D_MODEL else TrainConfig
    config = cls.from_dict(data)
    again = config.to_dict()
    changed = sorted(k for k, v in data.items() if k not in again or again[k] != v)
    assert not changed, f"{path}: {', '.join(changed)} not kept by {cls.__name__}"
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    added = sorted(k for k in set(again) - set(data) if again[k] != defaults.get(k))
    assert not added, f"{path}: {', '.join(added)} missing and not at their defaults"
    return config


def reader(path: Path) -> Callable[[Path], Any] | None:
    """The reader the book uses for a file under book/results, by its place and name."""
    parts = path.relative_to(RESULTS).parts
    name = path.name
    if len(parts) == 1:
        if name.endswith(".carry.tar.gz"):  # a study's unfinished jobs, put back by `--carry`
            from mamlbook.studies.carry import carried

            return carried
        if name.startswith("bench-") and name.endswith(".json"):
            return read_rows
        if name == "distributed-scaling.json":
            return partial(read_record, ScalingResult)
        if name.endswith(".json"):
            return load_result  # every other top-level JSON file is a study's result
    elif len(parts) == 2:
        if name == "eval.json" or (name.startswith("eval-") and name.endswith(".json")):
            return read_eval
        if parts[0] == "omniglot-prototypes" and name.endswith(".pt"):  # the study's kept weights
            from mamlbook.studies.omniglot_prototypes import load_weights

            return load_weights
        return {
            "lake.json": read_lake,
            "run.json": read_run_note,
            "metrics.jsonl": read_metrics,
            "config.json": read_config,
        }.get(name)
    return None


FILES = sorted(p for p in RESULTS.rglob("*") if p.is_file())
READ = [p for p in FILES if not_a_result(p) is None]


def test_the_results_folder_holds_what_the_book_reads():
    assert len(READ) > 30, f"only {len(READ)} files under {RESULTS}"
    studies = {load_result(p).study for p in READ if reader(p) is load_result}
    assert studies == set(RESULT_TYPES), "every study has a stored result"
    assert {p.name for p in FILES if not_a_result(p)} <= {"checkpoint.pt", "better-omniglot-cuda.log"}


@pytest.mark.parametrize("path", READ, ids=[str(p.relative_to(RESULTS)) for p in READ])
def test_every_result_file_loads_through_its_record(path):
    read = reader(path)
    assert read is not None, (
        f"book/results/{path.relative_to(RESULTS)} has no reader: describe it with a record (and add its reader "
        "here), or list it in NOT_RESULTS with the reason"
    )
    try:
        record = read(path)
    except Exception as error:  # data a configuration checks for (PBC, Omniglot) may be absent on this machine
        from mamlbook.data.remote import DataMissingError

        if isinstance(error, DataMissingError):
            pytest.skip(f"{path.name} validates its task, whose data is absent: {error}"[:200])
        raise
    if read is load_result:
        assert path.stem == record.study or path.stem.startswith(record.study + "-"), "file named after its study"
    if read in (read_rows, read_metrics):
        assert record, f"{path} holds no rows"
    if path.name.endswith(".carry.tar.gz"):  # carry_out removes an archive with nothing left to carry
        assert any(name.endswith("checkpoint.pt") for name in record), f"{path} carries no checkpoint"


def test_the_readmes_stored_results_example_runs_on_the_stored_files(monkeypatch):
    # The README's "Stored results" block is what a user copies first: every key in it must exist.
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    (block,) = [b for b in blocks if b.startswith("from mamlbook.studies import load_result")]
    monkeypatch.chdir(root)
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert {"rl", "medical", "paper"} <= set(namespace)
