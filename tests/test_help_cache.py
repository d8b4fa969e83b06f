"""``python -m ferlit.fit --help`` prints its kept text without importing Lightning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferlit.help_cache import help_cache_dir, help_key, print_help
from ferlit.training.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FERLIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "100")
    return tmp_path / "cache" / "help"


def test_the_first_help_is_built_and_kept_the_next_is_read(cache, capsys):
    assert print_help("fit", ["--help"], lambda: main(["--help"])) is True
    built = capsys.readouterr().out
    assert built.startswith("usage: python -m ferlit fit")
    assert "--val_every_n_steps" in built
    (kept,) = cache.iterdir()
    assert kept.name == f"fit-{help_key('fit', ['--help'])}.txt"
    assert kept.read_text() == built

    def not_again():
        raise AssertionError("built again")

    assert print_help("fit", ["--help"], not_again) is True
    assert capsys.readouterr().out == built
    assert print_help("fit", ["-h"], not_again) is True  # the same text, the same file
    assert capsys.readouterr().out == built
    # anything but a plain help request runs as usual
    assert print_help("fit", ["--help", "--config", "x.yaml"], not_again) is False


def test_the_key_follows_the_width_and_the_code(cache, monkeypatch, tmp_path):
    key = help_key("fit", ["--help"])
    monkeypatch.setenv("COLUMNS", "120")
    assert help_key("fit", ["--help"]) != key
    monkeypatch.setenv("COLUMNS", "100")
    assert help_key("fit", ["--help"]) == key
    assert help_key("ferlit-fit", ["--help"]) != key


def test_a_refused_option_is_not_kept(cache, capsys):
    with pytest.raises(SystemExit) as exit_info:
        print_help("fit", ["--help"], lambda: sys.exit(2))
    assert exit_info.value.code == 2
    assert not cache.exists() or not list(cache.iterdir())


@pytest.mark.parametrize(
    ("command", "argv"), [("fit", ["-m", "ferlit.fit"]), ("ferlit-fit", ["-m", "ferlit", "fit"])]
)
def test_kept_help_is_printed_without_importing_lightning(cache, command, argv):
    """The import graph of a kept --help: neither lightning nor torch (the 7-16 s of a build)."""
    text = "usage: python -m ferlit fit (kept)\n"
    path = help_cache_dir() / f"{command}-{help_key(command, ['--help'])}.txt"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, text)
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
    assert "ferlit.help_cache" in imported
    assert not {m for m in imported if m.split(".")[0] in ("lightning", "torch", "timm")}
