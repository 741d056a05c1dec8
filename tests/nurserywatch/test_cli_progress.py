"""Progress output (nurserywatch/cli/progress.py): in place on a terminal, plain lines in a log."""

from __future__ import annotations

import io

import pytest

from nurserywatch.cli.main import _progress
from nurserywatch.cli.progress import ProgressLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(stream: io.StringIO, steps: int = 600, every_s: float = 0.1) -> None:
    """One minute of progress, an update every 0.1 s of a fake clock, the last one final."""
    now = [0.0]
    line = ProgressLine(stream, monotonic=lambda: now[0])
    for i in range(1, steps + 1):
        now[0] = i * every_s
        line.update(f"readings: {i}/{steps}", final=i == steps)


def test_a_log_gets_plain_lines_at_a_sane_interval() -> None:
    log = io.StringIO()  # not a terminal: a file, a pipe, journald
    run(log)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # t = 0.1 s, then every 10 s (10.1 … 50.1), and the final state at 60 s
    assert lines == [f"readings: {i}/600" for i in (1, 101, 201, 301, 401, 501, 600)]


def test_a_terminal_gets_one_line_rewritten_in_place() -> None:
    tty = Terminal()
    run(tty, steps=20, every_s=0.3)  # shown when 0.5 s have passed: every other update
    text = tty.getvalue()
    assert text.count("\n") == 1 and text.endswith("readings: 20/20\n")
    shown = [f"readings: {i}/20" for i in (1, 3, 5, 7, 9, 11, 13, 15, 17, 19)]
    assert text.split("\r")[1:] == [*shown, "readings: 20/20\n"]


def test_a_shorter_text_blanks_the_rest_of_the_line() -> None:
    tty = Terminal()
    line = ProgressLine(tty, tty_every_s=0)
    line.update("influx points: 100/1000")
    line.update("done")
    assert tty.getvalue() == "\rinflux points: 100/1000\rdone" + " " * 19


def test_the_cli_writes_no_carriage_return_into_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    """`nurserywatch data export/erase` with standard error going to a file (pytest's capture is
    not a terminal, as a systemd unit's or cron's log is not)."""
    show = _progress()
    for i in range(0, 20_001, 5000):
        show("readings", i, 20_000)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == ["readings: 0/20000", "readings: 20000/20000"]
