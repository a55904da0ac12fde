"""``rflens trf`` end to end: every output format and every bad-input case (one line, exit 2)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap

import pytest

from rflens.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


SPEC = "input: [1, 64, 64]\nlayers:\n  - {op: conv, kernel: 3, stride: 2}\n  - {op: conv, kernel: 2}\n"


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "chain.yaml"
    path.write_text(SPEC)
    return str(path)


def test_json_schema(capsys, spec_file):
    code, out, _ = run(capsys, "trf", spec_file, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["schema_version"] == 1
    assert data["input"]["shape"] == [1, 1, 64, 64]
    first, second = data["layers"][0], data["layers"][1]
    for key in ("name", "op", "shape", "size", "jump", "padding", "center", "aligned", "uniform", "global"):
        assert key in first
    assert first["size"] == [3, 3] and first["jump"] == [2, 2]
    assert second["size"] == [5, 5]  # 3x3 stride 2 then 2x2: the docs' worked example
    assert data["warnings"] == []


def test_csv_and_markdown(capsys, spec_file):
    code, out, _ = run(capsys, "trf", spec_file, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and rows[1]["size_0"] == "5" and rows[1]["jump_1"] == "2"
    code, out, _ = run(capsys, "trf", spec_file, "--format", "markdown")
    assert code == 0 and out.startswith("| layer |") and "| 5 |" in out


def test_table_layers_glob_and_ops(capsys):
    code, out, _ = run(capsys, "trf", "torchvision:resnet18", "--layers", "layer4", "layer1.*.conv2")
    assert code == 0
    assert "layer4 " in out and "435" in out and "layer1.1.conv2" in out and "layer2" not in out
    code, out, _ = run(capsys, "trf", "torchvision:resnet18", "--ops", "--format", "json", "--layers", "*:add*")
    names = [layer["name"] for layer in json.loads(out)["layers"]]
    assert code == 0 and names and all(":add" in n for n in names)


def test_factory_file(capsys, tmp_path):
    path = tmp_path / "net.py"
    path.write_text(textwrap.dedent("""
        from torch import nn
        def build():
            return nn.Sequential(nn.Conv1d(1, 1, 5, dilation=2), nn.Conv1d(1, 1, 3))
    """))
    code, out, _ = run(capsys, "trf", f"{path}:build", "--input", "1x40", "--format", "json")
    layers = json.loads(out)["layers"]
    assert code == 0 and layers[0]["size"] == [9] and layers[1]["size"] == [11]


def test_verify_passes_on_a_real_model(capsys):
    code, _, err = run(capsys, "trf", "torchvision:resnet18", "--input", "3x64x64", "--verify",
                       "--layers", "layer1", "layer2.0", "maxpool", "--format", "json")
    assert code == 0 and "all agree" in err


@pytest.mark.parametrize("argv, needle", [
    (["trf", "torchvision:resnet1"], "did you mean 'resnet18'"),
    (["trf", "torchvision:resnet18", "--input", "3xx"], "bad --input '3xx'"),
    (["trf", "torchvision:resnet18", "--input", "3x0x5"], "positive"),
    (["trf", "torchvision:vgg16", "--input", "3x16x16"], "at least 3x32x32"),
    (["trf", "no_such_file.yaml"], "no_such_file.yaml"),
    (["trf", "missing.py:build"], "missing.py"),
    (["trf", "torchvision:resnet18", "--layers", "nope*"], "no layer"),
    (["trf", "torchvision:resnet18", "--format", "xml"], "invalid choice"),
])
def test_bad_input_one_line_exit_2(capsys, argv, needle):
    with pytest.raises(SystemExit) if "--format" in argv and "xml" in argv else _nullcontext():
        code, out, err = run(capsys, *argv)
        assert code == 2
        assert needle in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_bad_spec_and_factory(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [1, 32]\nlayers:\n  - {op: conv, kernal: 3}\n")
    code, _, err = run(capsys, "trf", str(bad))
    assert code == 2 and "kernal" in err and len(err.strip().splitlines()) == 1
    factory = tmp_path / "f.py"
    factory.write_text("def build():\n    return 3\n")
    code, _, err = run(capsys, "trf", f"{factory}:build")
    assert code == 2 and "build" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "trf", f"{factory}:nothere")
    assert code == 2 and "nothere" in err


def test_strict_unknown_op(capsys, tmp_path):
    path = tmp_path / "flip.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        class Flip(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 1, 3)
            def forward(self, x):
                return torch.flip(self.conv(x), dims=[2])
        def build():
            return Flip()
    """))
    code, out, _ = run(capsys, "trf", f"{path}:build", "--input", "1x16x16", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["layers"][-1]["unknown"] is True
    assert any("aten.flip" in u["op"] for u in data["unsupported_ops"])
    code, _, err = run(capsys, "trf", f"{path}:build", "--input", "1x16x16", "--strict")
    assert code == 2 and "aten.flip" in err and len(err.strip().splitlines()) == 1


def test_debug_shows_traceback_and_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "rflens", "--debug", "trf", "torchvision:resnet1"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "rflens", "trf", "torchvision:resnet1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
