"""The SQLite store of the runtime child ↔ device assignments (the pure part and the semantics are in
gateway/engine/assignments.py; the observer that runs them in the gateway in
gateway/db/assignments_observer.py): an append-only history table in the gateway's database."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gateway.db.schema import connect_writer
from nurserywatch.contract import AssignmentSource, DeviceAssignment


class AssignmentStore:
    """Append-only history of staff assignments in the gateway's database; the latest row of a
    (day, device) is in force."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # The table is gateway/db/schema.py's; SQLite's default sync level (FULL), as this store always had.
        self._db = connect_writer(self.path, synchronous=None)

    def load(self, day: str) -> list[DeviceAssignment]:
        rows = self._db.execute(
            "SELECT device, child, by, ts FROM device_assignments WHERE seq IN "
            "(SELECT MAX(seq) FROM device_assignments WHERE day = ? GROUP BY device)",
            (day,),
        ).fetchall()
        return [
            DeviceAssignment(device=r[0], child=r[1], source=AssignmentSource.STAFF, day=day, by=r[2], updated_ts=r[3])
            for r in rows
        ]

    def append(self, rows: Iterable[DeviceAssignment]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO device_assignments (day, device, child, by, ts) VALUES (?, ?, ?, ?, ?)",
                [(r.day, r.device, r.child, r.by or "", r.updated_ts) for r in rows],
            )

    def close(self) -> None:
        self._db.close()
