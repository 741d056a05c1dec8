"""The dashboard's read interface to the gateway: everything dashboard/ takes from gateway/ comes
through this module. The alerts, readings and nap sessions (``StoreReader``), the nap-check records
(``RecordReader``) and their printable sheet, the trends, and the rules file as configuration.

Importing it loads no rules, engine, service or observer module (tests/dashboard/
test_dashboard_read_interface.py): the dashboard reads the gateway's SQLite and files, it never runs
or reaches into the gateway.
"""

from __future__ import annotations

from gateway.config import RulesConfig, RulesError, Threshold, check_rules_fit_kit
from gateway.db.reader import StoreError, StoreReader
from gateway.records.entries import ChainHead
from gateway.records.export import LAST_DAY, SheetRow, build_sheet, covered_head, day_bounds, to_csv
from gateway.records.reader import RecordReader, RecordStoreError
from gateway.trends.queries import METRICS, RANGES, TrendError, room_devices, window
from gateway.trends.reader import reads_influx, room_trend

__all__ = [
    "LAST_DAY",
    "ChainHead",
    "METRICS",
    "RANGES",
    "RecordReader",
    "RecordStoreError",
    "RulesConfig",
    "RulesError",
    "SheetRow",
    "StoreError",
    "StoreReader",
    "Threshold",
    "TrendError",
    "build_sheet",
    "check_rules_fit_kit",
    "covered_head",
    "day_bounds",
    "reads_influx",
    "room_devices",
    "room_trend",
    "to_csv",
    "window",
]
