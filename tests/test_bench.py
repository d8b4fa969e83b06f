"""``python benchmarks/bench.py``: every figure is printed (timings are the bench's job, not a test's)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bench import build_parser, main, pipeline_report, report, write_fullscale_layout

from ferlit.data.readers.affwild2 import read_affwild2
from ferlit.data.readers.expw import read_expw

BENCH = str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py")
NUMBER = r"[\d,]+(\.\d+)?"


@pytest.mark.slow
def test_quick_bench_prints_every_figure(tmp_path):
    env = os.environ | {"FERLIT_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, BENCH, "--quick", "--workers", "2"]
        + ["--work_dir", str(tmp_path / "work"), "--json", str(tmp_path / "bench.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for pattern in (
        rf"\(a\) naive: PIL \+ torchvision, default DataLoader +{NUMBER} images/s",
        rf"\(b\) ferlit JPEG path .* +{NUMBER} images/s",
        rf"\(c\) ferlit packed path .* +{NUMBER} images/s",
        rf"\(d\) ceiling: packed uint8 copies, no augmentation +{NUMBER} images/s",
        rf"\(e\) packed path, augment_on device \(loader side\) +{NUMBER} images/s",
        rf"\(b\)/\(a\) = {NUMBER}x +target >= 2.0x: (met|NOT MET)",
        rf"\(c\)/\(a\) = {NUMBER}x +target >= 2.5x: (met|NOT MET)",
        rf"\(c\) per worker core +{NUMBER} images/s",
        r"Index at full scale: 6 videos, 3,000 annotation lines, [\d,]+ \(empty\) image files, "
        r"200 ExpW faces",
        rf"index build, cache empty +{NUMBER} s",
        rf"cached load in a new process +{NUMBER} s +target < 2 s: (met|NOT MET)",
        rf"DataModule holding the index +-?{NUMBER} MB resident +target < 200 MB",
        rf"DataLoader workers over one epoch \([\d,]+ samples\): private memory {NUMBER} -> "
        rf"{NUMBER} MB, growth [+-]{NUMBER} MB +target < 10 MB",
        r"Training step, SE-ResNet-50 at 112x112 on .*, 1 thread \(batch 2, 1 step\)",
        rf"fp32 +{NUMBER} images/s",
        rf"bf16-mixed \+ channels_last +({NUMBER} images/s|not measured: .+)",
        rf"worker cores to feed {NUMBER} images/s from the packed path: \d+",
    ):
        assert re.search(pattern, out), f"{pattern!r} not in:\n{out}"

    figures = json.loads((tmp_path / "bench.json").read_text())
    loaders, index = figures["loaders"], figures["index"]
    assert loaders["jpeg_ratio"] == pytest.approx(loaders["jpeg"] / loaders["naive"])
    assert loaders["packed_per_worker"] == pytest.approx(loaders["packed"] / 2)
    assert index["walked"] == index["train"] // 256 * 256  # one epoch of whole batches
    assert not (tmp_path / "cache").exists()  # the bench's caches live in its work folder


def test_fullscale_layout_has_the_size_asked_for(tmp_path):
    counts = write_fullscale_layout(tmp_path, videos=5, lines=2000, expw_faces=30, progress=False)

    annotations = sorted((tmp_path / "affwild2/annotations/EXPR_Set").glob("*/*.txt"))
    assert len(annotations) == 5
    assert sum(len(p.read_text().splitlines()) - 1 for p in annotations) == 2000
    frames = list((tmp_path / "affwild2/cropped_aligned").glob("*/*.jpg"))
    images = list((tmp_path / "expw/image/origin").iterdir())
    assert counts == {
        "videos": 5,
        "lines": 2000,
        "image_files": len(frames) + len(images),
        "expw_faces": 30,
    }
    assert all(p.stat().st_size == 0 for p in frames[:10])

    train = read_affwild2(tmp_path / "affwild2", "train", progress=False)
    val = read_affwild2(tmp_path / "affwild2", "val", progress=False)
    assert len(train) + len(val) == len(frames)  # every frame file is an annotated frame
    assert 0.3 < len(frames) / 2000 < 0.55  # ~53% labelled, ~80% of those with a face crop
    expw = read_expw(tmp_path / "expw", progress=False)
    assert len(expw) == 30 and expw.skipped["duplicate"] == 0
    assert len(np.unique(expw.groups)) == len(images)


def figures(naive=100.0, jpeg=250.0, packed=300.0, load=0.5, mb=50.0, growth=0.5, bf16=None):
    loaders = {
        "images": 1000,
        "frames": 500,
        "naive": naive,
        "jpeg": jpeg,
        "packed": packed,
        "ceiling": 1000.0,
        "packed_device": 900.0,
        "jpeg_ratio": jpeg / naive,
        "packed_ratio": packed / naive,
        "packed_per_worker": packed / 2,
    }
    index = {
        "videos": 550,
        "lines": 2_600_000,
        "image_files": 1_100_000,
        "expw_faces": 91_793,
        "train": 1_000_000,
        "val": 200_000,
        "build_s": 9.0,
        "cached_load_s": load,
        "rss_mb": 800.0,
        "datamodule_mb": mb,
        "worker_start_mb": 10.0,
        "worker_end_mb": 10.0 + growth,
        "worker_growth_mb": growth,
        "walked": 999_936,
    }
    training = {"device": "CPU", "batch": 32, "steps": 3, "fp32": 40.0, "bf16": bf16}
    if bf16 is None:
        training["bf16_missing"] = "this CPU has no bf16 instructions (avx512_bf16 / amx_bf16)"
    return loaders, index, training


def test_report_checks_each_target():
    text = "\n".join(report(*figures(), workers=2, batch=64))
    assert "(b)/(a) = 2.50x   target >= 2.0x: met" in text
    assert "(c)/(a) = 3.00x   target >= 2.5x: met" in text
    assert "target < 2 s: met" in text and "target < 200 MB: met" in text
    assert "growth +0.5 MB   target < 10 MB: met" in text
    assert "not measured: this CPU has no bf16 instructions" in text
    # 40 images/s from workers giving 150 images/s each: one core is enough
    assert "worker cores to feed 40 images/s from the packed path: 1" in text

    text = "\n".join(
        report(
            *figures(jpeg=150.0, packed=200.0, load=3.0, mb=250.0, growth=50.0, bf16=900.0),
            workers=2,
            batch=64,
        )
    )
    assert "(b)/(a) = 1.50x   target >= 2.0x: NOT MET" in text
    assert "(c)/(a) = 2.00x   target >= 2.5x: NOT MET" in text
    assert "target < 2 s: NOT MET" in text and "target < 200 MB: NOT MET" in text
    assert "target < 10 MB: NOT MET" in text
    assert re.search(r"bf16-mixed \+ channels_last +900 images/s", text)
    assert "worker cores to feed 900 images/s from the packed path: 9" in text  # 900 / 100


@pytest.mark.parametrize(
    ("old", "new"), [("--work-dir", "--work_dir"), ("--batch-size=8", "--batch_size")]
)
def test_old_spellings_are_refused_naming_the_new_one(old, new, tmp_path, capsys):
    assert main(["--quick", old, *([] if "=" in old else [str(tmp_path / "w")])]) == 2
    assert capsys.readouterr().err == f"error: {old.split('=')[0]}: now {new}\n"
    assert not (tmp_path / "w").exists()


def test_every_option_has_a_help_line(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    options = [o for a in parser._actions for o in a.option_strings]
    assert {
        "--quick",
        "--gpu",
        "--workers",
        "--batch_size",
        "--work_dir",
        "--threads",
        "--json",
    } <= set(options)
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:  # jsonargparse's hidden --print_shtab
            continue
        assert all(o in shown for o in action.option_strings), action.option_strings
        assert len((action.help or "").split()) >= 3, (action.option_strings, action.help)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU-only report")
def test_gpu_bench_without_cuda_measures_what_it_can_and_names_what_it_skipped(tmp_path, capsys):
    assert main(["--gpu", "--quick", "--workers", "0", "--work_dir", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    for pattern in (
        r"Whole training pipeline, SE-ResNet-50 at 112x112 on .*: packed sample data, 0 workers, "
        r"batch 2, 1 timed step",
        rf"loader only, augmentation on cpu +{NUMBER} faces/s",
        rf"loader only, augmentation on device +{NUMBER} faces/s",
        rf"fp32, eager +aug cpu +{NUMBER} faces/s +1M-face epoch \(1,004,523\) \d",
        rf"fp32, eager +aug device +{NUMBER} faces/s +1M-face epoch \(1,004,523\) \d",
        r"skipped: bf16-mixed \+ channels_last: no CUDA",
        r"skipped: torch.compile: no CUDA",
        r"skipped: batch 256, 20 steps: no CUDA \(one fp32 step of batch 2 instead\)",
        r"skipped: GPU utilisation and peak memory: no CUDA",
    ):
        assert re.search(pattern, out), f"{pattern!r} not in:\n{out}"
    assert "bf16-mixed + channels_last, eager" not in out and "torch.compile  " not in out


def test_pipeline_report_on_a_gpu_projects_the_epoch():
    runs = [
        {"precision": "bf16", "compiled": True, "augment_on": "device", "rate": 10_000.0}
        | {"peak_mb": 20_480.0, "utilisation": 97.0},
        {"precision": "fp32", "compiled": False, "augment_on": "cpu", "rate": 1_000.0}
        | {"peak_mb": 1024.0, "utilisation": None},
    ]
    result = {"device": "NVIDIA H200", "batch": 256, "steps": 20, "skipped": []}
    result |= {"loader": {"cpu": 1800.0, "device": 5400.0}, "runs": runs}
    result["utilisation_missing"] = None
    text = "\n".join(pipeline_report(result, workers=8))
    assert "on NVIDIA H200: packed sample data, 8 workers, batch 256, 20 timed steps" in text
    assert re.search(r"loader only, augmentation on device +5,400 faces/s", text)
    # 1,004,523 faces at 10,000 faces/s: 100.5 s; at 1,000 faces/s: 1,004.5 s
    assert re.search(
        r"bf16-mixed \+ channels_last, torch.compile +aug device +10,000 faces/s +1M-face epoch "
        r"\(1,004,523\) 1 min 40 s +peak 20.0 GiB +GPU busy 97%",
        text,
    )
    assert re.search(r"fp32, eager +aug cpu +1,000 faces/s .* 16 min 45 s +peak 1.0 GiB$", text)
    assert "skipped" not in text


def test_gpu_refuses_batch_size_rather_than_ignoring_it(tmp_path, capsys):
    assert main(["--gpu", "--batch_size", "32", "--work_dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --batch_size is the loader figures' batch; --gpu uses batch 256")
    assert not (tmp_path / "w").exists()
