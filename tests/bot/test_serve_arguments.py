"""``model-guard serve --port`` is a TCP port or refused in one line while parsing."""

import pytest

from bot.cli import main


@pytest.mark.parametrize("port", ["0", "-1", "65536", "nan", "", "1e3", "9" * 30])
def test_serve_refuses_a_port_outside_1_to_65535_in_one_line(
    capsys: pytest.CaptureFixture[str], port: str
) -> None:
    assert main(["serve", f"--port={port}"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("model-guard: error: argument --port:")
