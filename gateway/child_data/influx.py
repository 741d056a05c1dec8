"""A child's points in the readings database — the HTTP shell of ``nurserywatch data export/erase``
(httpx, synchronous: the CLI runs it). The queries come from gateway/child_data/selection.py.

- InfluxDB 1.x (``X-Influxdb-Version: 1.…``): InfluxQL over ``/query``; the export goes measurement
  by measurement in time-bounded chunks (``INFLUX_CHUNK_MS``); the erase is ``DROP SERIES WHERE
  "child" = '…'`` (every measurement, all time), then checked with ``SHOW SERIES``.
- VictoriaMetrics (no version header): ``/api/v1/export`` and ``/api/v1/admin/tsdb/delete_series``
  with the selector ``{child="…"}``.
- InfluxDB 2.x/3.x: refused with the command to run by hand (their v1-compatible ``/query`` reads but
  does not drop, and deleting needs an operator token on ``/api/v2/delete``; not tested here).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.child_data.selection import (
    INFLUX_CHUNK_MS,
    ChildDataError,
    influx_bounds_query,
    influx_chunk_query,
    influx_drop_statement,
    influx_measurements_query,
    influx_series_rows,
    time_chunks,
    victoria_selector,
)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class InfluxPoints:
    """One chunk of a child's points: measurement (VictoriaMetrics: metric name), columns, rows."""

    measurement: str
    columns: list[str]
    rows: list[list[Any]]


class ChildInflux:
    """The readings database of a kit with ``readings: influxdb``."""

    def __init__(self, url: str, database: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = url
        self.database = database
        headers = {"Authorization": f"Token {token}"} if token else {}
        self._client = httpx.Client(base_url=url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ChildInflux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flavour(self) -> str:
        """``influxql`` (1.x), ``victoria`` (no version header) or ``v2`` (2.x/3.x)."""
        version = self._call("GET", "/ping").headers.get("X-Influxdb-Version")
        if not version:
            return "victoria"
        return "influxql" if version.strip().lstrip("vV").split(".", 1)[0] in ("0", "1") else "v2"

    # ------------------------------------------------------------ export

    def count(self, child: str) -> int:
        flavour = self.flavour()
        if flavour == "influxql":
            return sum(n for _m, _first, _last, n in self._bounds(child))
        if flavour == "victoria":
            return sum(len(p.rows) for p in self._victoria_export(child))
        raise ChildDataError(self._v2_advice(child))

    def export(self, child: str, progress: Progress | None = None) -> Iterator[InfluxPoints]:
        flavour = self.flavour()
        if flavour == "victoria":
            yield from self._victoria_export(child)
            return
        if flavour != "influxql":
            raise ChildDataError(self._v2_advice(child))
        bounds = self._bounds(child)
        total, done = sum(n for *_x, n in bounds), 0
        for measurement, first, last, _n in bounds:
            for start, end in time_chunks(first, last, INFLUX_CHUNK_MS):
                answer = self._query("GET", influx_chunk_query(measurement, child, start, end))
                for _name, columns, rows in influx_series_rows(answer):
                    done += len(rows)
                    yield InfluxPoints(measurement, columns, rows)
                if progress is not None:
                    progress("InfluxDB points", done, max(total, done))

    def _bounds(self, child: str) -> list[tuple[str, int, int, int]]:
        """(measurement, first ms, last ms, points) of every measurement holding the child's points."""
        answer = self._query("GET", influx_measurements_query(child))
        out = []
        for m in [str(row[0]) for _n, _c, rows in influx_series_rows(answer) for row in rows]:
            got = {fn: self._value(influx_bounds_query(m, child, fn)) for fn in ("count", "first", "last")}
            if got["count"] is not None and got["count"][1]:
                assert got["first"] is not None and got["last"] is not None
                out.append((m, got["first"][0], got["last"][0], int(got["count"][1])))
        return out

    def _value(self, q: str) -> tuple[int, Any] | None:
        """(time, value) of a one-row answer, None when empty."""
        for _n, _c, rows in influx_series_rows(self._query("GET", q)):
            if rows:
                return int(rows[0][0]), rows[0][1]
        return None

    # ------------------------------------------------------------ erase

    def erase(self, child: str) -> int:
        """Remove every point tagged with the child; returns how many there were. Raises
        ChildDataError when the server cannot do it (with what to do instead)."""
        flavour = self.flavour()
        if flavour == "victoria":
            n = sum(len(p.rows) for p in self._victoria_export(child))
            self._call("POST", "/api/v1/admin/tsdb/delete_series", params={"match[]": victoria_selector(child)})
            if any(self._victoria_export(child)):
                raise ChildDataError(f"{self.url}: the child's series are still there after delete_series")
            return n
        if flavour != "influxql":
            raise ChildDataError(self._v2_advice(child))
        n = sum(count for *_x, count in self._bounds(child))
        self._query("POST", influx_drop_statement(child))
        if self._bounds(child):
            raise ChildDataError(f"{self.url}: the child's series are still there after DROP SERIES")
        return n

    # ------------------------------------------------------------ internals

    def _v2_advice(self, child: str) -> str:
        return (
            f"{self.url} is InfluxDB 2.x/3.x: erase the child's points by hand, e.g. `influx delete --bucket "
            f"<bucket> --start 1970-01-01T00:00:00Z --stop 2100-01-01T00:00:00Z --predicate 'child=\"{child}\"'` "
            '(docs/storage.md, "A child\'s data")'
        )

    def _victoria_export(self, child: str) -> list[InfluxPoints]:
        r = self._call("GET", "/api/v1/export", params={"match[]": victoria_selector(child)})
        out = []
        for text in r.text.splitlines():
            if not text.strip():
                continue
            series = json.loads(text)
            labels = {k: v for k, v in series["metric"].items() if k != "__name__"}
            columns = ["time", "value", *sorted(labels)]
            rows = [[t, v, *(labels[k] for k in sorted(labels))]
                    for t, v in zip(series["timestamps"], series["values"], strict=True)]  # fmt: skip
            out.append(InfluxPoints(str(series["metric"].get("__name__", "")), columns, rows))
        return out

    def _query(self, method: str, q: str) -> dict[str, Any]:
        params = {"db": self.database, "epoch": "ms", "q": q}
        r = (
            self._call(method, "/query", params=params)
            if method == "GET"
            else self._call(method, "/query", data=params)
        )
        answer: dict[str, Any] = r.json()
        list(influx_series_rows(answer))  # raises on an error in the answer
        return answer

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ChildDataError(f"{self.url}: not reachable ({exc.__class__.__name__}: {exc})") from None
        if r.status_code >= 300:
            raise ChildDataError(f"{self.url}{path}: HTTP {r.status_code}: {r.text[:200]}")
        return r
