"""Tables written to a file or pipe are not folded into 80 columns."""

from __future__ import annotations

from medcls.cli.common import console


def test_console_is_wide_off_a_terminal(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert console().width == 200  # pytest captures stdout: not a terminal
    monkeypatch.setenv("COLUMNS", "123")
    assert console().width == 123
    assert console(width=90).width == 90
