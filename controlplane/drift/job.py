"""A window too big for the function, checked in full: ``python -m controlplane.drift.job``.

An Azure ML command job (``pipelines/drift-check.yml``) runs this over the telemetry Event Hubs Capture wrote to
storage: every ``.avro`` file under ``--telemetry`` (Capture's ``EventData`` records, one per event), each event's
``Body`` decoded as ``on_telemetry`` decodes it (``parse_telemetry_body``, gzip when the event's
``Content-Encoding`` property says so). The records of ``--model`` and ``--deployment`` whose timestamp falls in
``[--start, --end)`` become rows as a window keeps them (``sample_row``) and are checked against the reference with
the function's own engine (``check_drift``), without the function's sample bound unless ``--settings`` names one.

An event the function would dead-letter (not JSON, bad gzip, a record breaking the contract) is skipped whole and
counted, as is an unreadable file: neither stops the check. Files are streamed and only the configured columns of
the kept rows are held, numbers in compact arrays, so a window of millions of records fits in memory.

The verdict goes to ``<--out>/result.json`` and, where mlflow tracks the run (Azure ML sets
``MLFLOW_TRACKING_URI``), to ``controlplane.drift.*`` tags on this run and on the pipeline run above it, which is
where the control plane reads them when Azure ML reports the job's end.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from controlplane.domain.drift import CATEGORICAL, NUMERICAL, VERDICT_TAG, DriftSettings
from controlplane.domain.errors import InvalidEvent, PermanentError
from controlplane.domain.windows import sample_row

TAG_CHARACTERS = 4000  # longer drifted lists and reasons are cut to this
EXAMPLES = 3  # problems described on stderr, per kind
_CONTENT_ENCODING = ("content-encoding", "content_encoding", "contentencoding")


@dataclass
class Tally:
    """What was read and what was left out, and why."""

    files: int = 0
    events: int = 0
    records: int = 0  # records of the window: the rows checked
    unreadable_files: int = 0  # not Avro, or cut short (the events read before the damage still count)
    invalid_events: int = 0  # the function would dead-letter them: skipped whole
    invalid_records: int = 0  # the records those events carried (0 when the body is not a JSON record or array)
    other_deployments: int = 0  # records of another model or deployment
    outside_window: int = 0  # records of this model and deployment timestamped outside [start, end)

    def skipped(self) -> dict[str, int]:
        return {"unreadable_files": self.unreadable_files, "invalid_events": self.invalid_events,
                "invalid_records": self.invalid_records, "other_deployments": self.other_deployments,
                "outside_window": self.outside_window}


class Columns:
    """The configured columns of the window's rows, column by column. A numerical column is kept as float64
    while every value is a number or missing (8 bytes a row), and as the values themselves from its first other
    value on, so the engine still sees and reports the invalid ones; repeated categories share one string."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        self.rows = 0
        self.values: dict[str, Any] = {name: array("d") if kind == NUMERICAL else [] for name, kind in kinds.items()}
        self.seen: set[str] = set()  # columns present in at least one row; the others are missing from the window
        self._categorical = {name for name, kind in kinds.items() if kind == CATEGORICAL}
        self._shared: dict[str, str] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows += 1
        for name, store in self.values.items():
            if name not in row:
                value = None
            else:
                value = row[name]
                self.seen.add(name)
            if type(store) is array:
                if value is None:
                    store.append(math.nan)
                    continue
                if type(value) in (int, float, bool):
                    try:
                        store.append(float(value))
                        continue
                    except OverflowError:  # an integer past float range: kept as it came
                        pass
                store = self.values[name] = list(store)
            elif type(value) is str and name in self._categorical:
                value = self._shared.setdefault(value, value)
            store.append(value)

    def frame(self):
        """The rows as a DataFrame of the columns seen (a column absent from every row is missing)."""
        import numpy as np
        import pandas as pd

        data = {}
        for name in self.values:
            if name not in self.seen:
                continue
            store = self.values[name]
            data[name] = np.frombuffer(store, dtype="float64") if type(store) is array \
                else pd.Series(store, dtype=object)
        return pd.DataFrame(data, index=pd.RangeIndex(self.rows))


def content_encoding(properties: Mapping[str, Any] | None) -> str | None:
    """The event's ``Content-Encoding`` application property (Capture keeps properties as long, double, string or
    bytes), matched as ``on_telemetry`` matches it."""
    for key, value in (properties or {}).items():
        if str(key).lower() in _CONTENT_ENCODING:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def captured_events(folder: Path, tally: Tally, problems: list[str]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every event (Capture's ``EventData`` record) of every ``.avro`` file under ``folder``, with its file, file
    by file in path order, streamed block by block. A file that cannot be read is counted, and reading goes on
    with the next."""
    from fastavro import reader

    for path in sorted(folder.rglob("*.avro")):
        if not path.is_file():
            continue
        tally.files += 1
        try:
            with path.open("rb") as handle:
                for event in reader(handle):
                    yield path, event
        except Exception as error:  # a damaged file is reported, never fatal
            tally.unreadable_files += 1
            if len(problems) < EXAMPLES:
                problems.append(f"{path}: {type(error).__name__}: {error}")


def records_carried(body: bytes, encoding: str | None) -> int:
    """How many records an invalid event carried: its array's length, 1 for an object, else 0."""
    from controlplane.parsing.fields import parse_json
    from controlplane.parsing.telemetry import decode_body

    try:
        payload = parse_json(decode_body(body, encoding))
    except InvalidEvent:
        return 0
    return len(payload) if isinstance(payload, list) else int(isinstance(payload, dict))


def read_window(folder: Path, model: str, deployment: str, start: datetime, end: datetime,
                kinds: Mapping[str, str]) -> tuple[Columns, Tally, list[str]]:
    """The window's rows from the captured events, with what was read and left out."""
    from controlplane.parsing.telemetry import parse_telemetry_body

    columns, tally, problems, invalid = Columns(kinds), Tally(), [], []
    for path, event in captured_events(folder, tally, problems):
        tally.events += 1
        body, encoding = event.get("Body"), content_encoding(event.get("Properties"))
        try:
            if not isinstance(body, bytes):
                raise InvalidEvent("$", "the event has no body")
            records = parse_telemetry_body(body, encoding)
        except InvalidEvent as error:
            tally.invalid_events += 1
            tally.invalid_records += records_carried(body, encoding) if isinstance(body, bytes) else 0
            if len(invalid) < EXAMPLES:
                invalid.append(f"{path}, sequence number {event.get('SequenceNumber')}: {error}")
            continue
        del body, event  # the records are all that is kept of the event
        for record in records:
            if record.model != model or record.deployment != deployment:
                tally.other_deployments += 1
            elif not start <= record.timestamp < end:
                tally.outside_window += 1
            else:
                tally.records += 1
                columns.add(sample_row(record))
    return columns, tally, problems + invalid


def read_settings(text: str) -> tuple[DriftSettings, bool]:
    """The settings of ``--settings`` (DriftSettings' fields as JSON; unknown keys refused), and whether the
    whole window is checked (no ``sample_bound``, or null)."""
    from controlplane.domain.errors import DriftConfigError

    try:
        raw = json.loads(text)
    except ValueError as error:
        raise DriftConfigError("settings", f"not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise DriftConfigError("settings", f"expected a JSON object of drift settings, got {type(raw).__name__}")
    whole = raw.get("sample_bound") is None
    if whole:
        raw.pop("sample_bound", None)
    return DriftSettings.from_mapping(raw), whole


def verdict(result: Any, rows: int, tally: Tally) -> dict[str, Any]:
    """result.json: the verdict the control plane acts on, the engine's evidence and the counts left out."""
    evidence = result.to_evidence()
    return {"rows": rows, "dataset_drift": bool(result.dataset_drift), "inconclusive": bool(result.inconclusive),
            "drifted": list(result.drifted), "share": evidence["share"], "reason": result.reason,
            "data_quality": bool(result.data_quality), "evidence": evidence, "skipped": tally.skipped(),
            "read": {"files": tally.files, "events": tally.events}}


def impossible(error: Exception, rows: int | None, tally: Tally) -> dict[str, Any]:
    """The verdict when the check cannot run (reference unreadable, a column missing from it...): inconclusive,
    as the function decides such a window."""
    return {"rows": rows, "dataset_drift": False, "inconclusive": True, "drifted": [], "share": 0.0,
            "reason": f"drift check impossible: {error}", "data_quality": False, "evidence": {"error": str(error)},
            "skipped": tally.skipped(), "read": {"files": tally.files, "events": tally.events}}


def _text(flag: bool) -> str:
    return "true" if flag else "false"


def _drifted_text(columns: list[str]) -> str:
    """The drifted columns, comma-separated, as many whole names as fit in a tag."""
    text = ""
    for column in columns:
        longer = f"{text},{column}" if text else column
        if len(longer) > TAG_CHARACTERS:
            break
        text = longer
    return text


def tags(found: Mapping[str, Any]) -> dict[str, str]:
    """The verdict as the run tags the control plane reads (``controlplane.drift.<name>``)."""
    values = {"dataset_drift": _text(found["dataset_drift"]), "inconclusive": _text(found["inconclusive"]),
              "drifted": _drifted_text(found["drifted"]), "share": f"{float(found['share'] or 0.0):.4f}",
              "data_quality": _text(found["data_quality"]), "reason": str(found["reason"])[:TAG_CHARACTERS]}
    if found["rows"] is not None:
        values["rows"] = str(found["rows"])
    return {VERDICT_TAG + name: value for name, value in values.items()}


def publish(values: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """Set the tags on this run and on the pipeline run above it (Azure ML reports that run's end to the control
    plane); the ids of the runs tagged, none without mlflow or a tracking URI."""
    if not environ.get("MLFLOW_TRACKING_URI"):
        return []
    try:
        import mlflow
    except ImportError:
        return []
    mlflow.set_tags(dict(values))
    run = mlflow.active_run()
    if run is None:
        return []
    own = run.info.run_id
    client = mlflow.MlflowClient()
    parent = client.get_run(own).data.tags.get("mlflow.parentRunId") or environ.get("AZUREML_ROOT_RUN_ID")
    if not parent or parent == own:
        return [own]
    for name, value in values.items():
        client.set_tag(parent, name, value)
    return [own, parent]


def _time(parser: argparse.ArgumentParser, text: str, option: str) -> datetime:
    from controlplane.parsing.fields import parse_time

    try:
        return parse_time(text, option)
    except InvalidEvent as error:
        parser.error(str(error))
        raise  # parser.error exits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane.drift.job", description=__doc__.splitlines()[0])
    parser.add_argument("--telemetry", type=Path, required=True, help="folder of Event Hubs Capture's .avro files")
    parser.add_argument("--reference", required=True, help="the reference data: a .csv, .csv.gz or .parquet file")
    parser.add_argument("--settings", required=True, help="the drift settings as JSON (DriftSettings' fields)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--deployment", required=True)
    parser.add_argument("--start", required=True, help="the window's first moment (ISO 8601), included")
    parser.add_argument("--end", required=True, help="the window's end (ISO 8601), excluded")
    parser.add_argument("--out", type=Path, required=True, help="folder for result.json")
    args = parser.parse_args(argv)

    start, end = _time(parser, args.start, "--start"), _time(parser, args.end, "--end")
    if not start < end:
        parser.error(f"--start {args.start} is not before --end {args.end}")
    if not args.telemetry.is_dir():
        parser.error(f"--telemetry {args.telemetry} is not a folder")
    try:
        settings, whole = read_settings(args.settings)
    except PermanentError as error:
        parser.error(f"--settings: {error}")

    from controlplane.drift import ReferenceCache, check_drift

    tally = Tally()
    try:
        reference = ReferenceCache().load(args.reference)
    except PermanentError as error:  # nothing to compare with: no need to read the telemetry
        found = impossible(error, None, tally)
    else:
        columns, tally, problems = read_window(args.telemetry, args.model, args.deployment, start, end,
                                               settings.columns)
        for problem in problems:
            print(f"skipped: {problem}", file=sys.stderr)
        if whole:
            settings = replace(settings, sample_bound=max(2, columns.rows))
        try:
            found = verdict(check_drift(columns.frame(), reference, settings), columns.rows, tally)
        except PermanentError as error:
            found = impossible(error, columns.rows, tally)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    tagged = publish(tags(found), os.environ)
    skipped = " ".join(f"{name}={count}" for name, count in found["skipped"].items())
    where = f"tagged on run {', '.join(tagged)}" if tagged else "not tagged: no mlflow tracking here"
    print(f"drift check {args.model}/{args.deployment} [{start.isoformat()}, {end.isoformat()}): "
          f"{found['rows'] if found['rows'] is not None else 'no'} records from {tally.events} events in "
          f"{tally.files} files; {found['reason']}; skipped {skipped}; {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
