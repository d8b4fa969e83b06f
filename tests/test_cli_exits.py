"""How the commands end when what surrounds them fails: a reader that closes their stdout, an
OSError that no check before the run could foresee."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_fit import fit_args

from ferlit.data.datamodule import ExpressionDataModule


def _closed_stdout_run(*args: str, cwd) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` with its stdout a pipe whose reading end is closed before it
    writes (``... | head -0``): every write it makes fails with EPIPE."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, *args] if args[0].endswith(".py") else [sys.executable, "-m", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
    )
    process.stdout.close()
    try:
        err = process.stderr.read().decode()
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    return subprocess.CompletedProcess(process.args, process.returncode, None, err)


def test_stats_json_into_a_closed_pipe_ends_quietly(tiny_sample, tmp_path):
    result = _closed_stdout_run(
        "ferlit.data", "stats", "--data.affwild2_dir", str(tiny_sample.affwild2_dir), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.stderr == ""  # no BrokenPipeError traceback, no "error: Broken pipe"
    assert result.returncode == 1


def test_synth_report_into_a_closed_pipe_ends_quietly(tmp_path):
    result = _closed_stdout_run(
        "ferlit.data", "synth", "--out", str(tmp_path / "s"), "--scale", "0.05", cwd=tmp_path
    )
    assert result.stderr == ""
    assert result.returncode == 1


BENCH = str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py")


@pytest.mark.parametrize("module", [BENCH, "ferlit.evaluate", "ferlit.data"])
def test_help_into_a_closed_pipe_ends_quietly(module, tmp_path):
    result = _closed_stdout_run(module, "--help", cwd=tmp_path)
    assert result.stderr == ""
    assert result.returncode in (0, 1)  # argparse passes over a failed write of its help


def test_an_unforeseen_os_error_in_fit_is_one_line_naming_the_file(
    tiny_sample, tmp_path, monkeypatch, capsys
):
    from ferlit.training.cli import main

    frame = tiny_sample.affwild2_dir / "cropped_aligned" / "v" / "00001.jpg"

    def unreadable(self, stage):
        raise PermissionError(errno.EACCES, "Permission denied", str(frame))

    monkeypatch.setattr(ExpressionDataModule, "setup", unreadable)
    with pytest.raises(SystemExit) as stop:
        main(fit_args(tiny_sample, tmp_path))
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {frame}: Permission denied"

    def full(self, stage):  # another member: a rename's two files, a disk that fills
        raise OSError(errno.ENOSPC, "No space left on device", "/a/.x.tmp", None, "/a/x")

    monkeypatch.setattr(ExpressionDataModule, "setup", full)
    with pytest.raises(SystemExit):
        main(fit_args(tiny_sample, tmp_path))
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: /a/.x.tmp -> /a/x: No space left on device"
    )


def test_an_os_error_naming_no_file_in_fit_is_not_hidden(tiny_sample, tmp_path, monkeypatch):
    from ferlit.training.cli import main

    def bug(self, stage):
        raise OSError("a bug of ferlit's, not the user's input")

    monkeypatch.setattr(ExpressionDataModule, "setup", bug)
    with pytest.raises(OSError, match="a bug of ferlit's"):
        main(fit_args(tiny_sample, tmp_path))
