"""The zoo sweep's machinery on a handful of models: listing, the worker pool (a hang, a crash),
one model's record, the JSON and the Markdown page. The whole zoo is `make zoo`, not a test."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch
import torchvision

from rflens.cli import main
from rflens.errors import RflensError
from rflens.trf.result import AxisField, LayerField, ReceptiveField
from rflens.zoo import Entry, ZooResult, list_entries, page, sweep
from rflens.zoo.catalog import build
from rflens.zoo.job import empty_record, generic, run_entry, summarise

FAKE = "zoo_jobs:by_name"  # tests/zoo_jobs.py: stand-in jobs that answer, hang or crash on cue


def fake(name: str, family: str = "fam") -> Entry:
    return Entry("timm", name, family)


# listing ------------------------------------------------------------------------------------

def test_listing_filters_every_and_families():
    resnets = list_entries("torchvision", ["resnet*"])
    names = [e.name for e in resnets]
    assert names == ["resnet101", "resnet152", "resnet18", "resnet34", "resnet50"]  # sorted
    assert {e.family for e in resnets} == {"resnet"}
    assert [e.name for e in list_entries("torchvision", ["resnet*"], every=2)] == \
        ["resnet101", "resnet18", "resnet50"]
    detection = {e.name: e.family for e in list_entries("torchvision", ["*rcnn*", "raft_*"])}
    assert detection["fasterrcnn_resnet50_fpn"] == "detection.faster_rcnn"
    assert detection["raft_small"] == "optical_flow.raft"
    vit = list_entries("timm", ["vit_base_patch16_224"])
    assert vit == [Entry("timm", "vit_base_patch16_224", "vision_transformer")]


@pytest.mark.parametrize("args, words", [
    (("torchvision", ["no_such_model*"], 1), "no torchvision model matches"),
    (("torchvision", None, 0), "--every 0"),
    (("keras", None, 1), "unknown zoo 'keras'"),
])
def test_listing_errors(args, words):
    with pytest.raises(RflensError, match=words):
        list_entries(*args)


# inputs of the models that do not take one image ---------------------------------------------

def test_detector_and_optical_flow_inputs():
    det = build(Entry("torchvision", "ssdlite320_mobilenet_v3_large", "detection.ssdlite"))
    assert det.device == "meta" and det.shapes == [[3, 320, 320]]  # the detector's own resize size
    assert [tuple(t.shape) for t in det.inputs] == [(1, 3, 320, 320)]
    assert "list of images" in det.note
    flow = build(Entry("torchvision", "raft_small", "optical_flow.raft"))
    assert [tuple(t.shape) for t in flow.inputs] == [(1, 3, 224, 224)] * 2
    assert "two images" in flow.note


def test_detector_takes_the_batched_tensor():
    """The sweep's detector splits a batch into the list of (C, H, W) images torchvision's
    detectors take: what reaches its resize transform is that list; its row names stay its own."""
    built = build(Entry("torchvision", "ssdlite320_mobilenet_v3_large", "detection.ssdlite"))
    model = built.model.eval()
    seen = []

    class Reached(Exception):
        pass

    def look(_module, args):
        seen.append(args[0])
        raise Reached

    handle = model.transform.register_forward_pre_hook(look)
    try:
        with pytest.raises(Reached):
            model(torch.empty(2, 3, 64, 48, device="meta"))
    finally:
        handle.remove()
    assert isinstance(seen[0], list) and [tuple(t.shape) for t in seen[0]] == [(3, 64, 48)] * 2
    assert "backbone.features" in dict(model.named_modules())


def test_meta_build_skips_initialisation_only():
    """Skipping the initialisers on meta changes nothing a field depends on: the same parameters
    and buffers (names, shapes, dtypes) as a plain meta build; a CPU tensor is still written."""
    import timm

    from rflens.zoo.catalog import _SkipMetaInit

    for name in ("vit_tiny_patch16_224", "resnet18"):
        with torch.device("meta"):
            plain = timm.create_model(name)
        fast = build(Entry("timm", name, "x")).model
        shapes = [[(k, v.shape, v.dtype, v.device.type) for k, v in m.state_dict().items()]
                  for m in (plain, fast)]
        assert shapes[0] == shapes[1]
    with _SkipMetaInit():
        t = torch.zeros(3)
        torch.nn.init.ones_(t)
        t.add_(1)
    assert t.tolist() == [2.0, 2.0, 2.0]


# one model's record -----------------------------------------------------------------------------

def test_record_of_a_known_model():
    record = run_entry(Entry("torchvision", "resnet18", "resnet"))
    assert record["status"] == "known" and record["reason"] is None
    assert record["build"] == "meta" and record["capture"] == "meta"
    assert record["input"] == [[3, 224, 224]]
    assert record["first_global"] == "avgpool"  # the adaptive 1x1 pool is the first to see everything
    assert record["unknown_rows"] == 0 and record["unsupported"] == {}
    assert record["rows"] == _module_calls(torchvision.models.resnet18())  # one row per module call
    assert set(record["times"]) >= {"build", "capture", "analysis", "result"}
    assert all(v >= 0 for v in record["times"].values())
    assert record["seconds"] >= record["times"]["capture"] + record["times"]["analysis"]
    json.dumps(record)  # plain data


def _module_calls(model) -> int:
    """How many module calls (the model's own included) a forward pass makes, counted by hooks."""
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 64, 64))
    for h in handles:
        h.remove()
    return len(calls)


def test_record_of_a_model_that_cannot_be_built():
    record = run_entry(Entry("timm", "no_such_model", "x"))
    assert record["status"] == "failed"
    assert "no_such_model" in record["reason"] and "\n" not in record["reason"]


def _layer(name, known=True, is_global=False, lost=()):
    axes = (AxisField(3, Fraction(1), 1, Fraction(0), True),) if known else (None,)
    return LayerField(name, "Conv", (1, 1, 8), axes, True, is_global, (), lost, (8,))


def test_summary_counts_rows_and_causes():
    rows = (_layer("a"), _layer("b", is_global=True), _layer("c", known=False, lost=("view splits (1, 8)",)),
            _layer("d", known=False, is_global=True, lost=("later",)))  # global and unknown: unknown
    from rflens.trf.graph import UnsupportedOp

    unsupported = (UnsupportedOp("aten.roll", "x", 4), UnsupportedOp("aten.roll", "y", 2),
                   UnsupportedOp("aten.stack", "z", 1, "its rule failed"))
    rf = ReceptiveField("m", (1, 1, 8), rows, (), unsupported, ("first line\nsecond line", "another"), "meta")
    record = empty_record(fake("m"))
    summarise(rf, record)
    assert record["status"] == "unknown" and record["unknown_rows"] == 2 and record["rows"] == 4
    assert record["first_global"] == "b" and record["global_rows"] == 2
    assert record["first_unknown"] == "c" and record["why_unknown"] == ["view splits (1, 8)"]
    assert record["unsupported"] == {"aten.roll": 6, "aten.stack: its rule failed": 1}
    assert record["warning"] == "first line" and record["warnings"] == 2
    assert record["reason"].startswith("2 of 4 rows unknown from c")
    known = ReceptiveField("m", (1, 1, 8), rows[:2], (), (), (), "cpu")
    record = empty_record(fake("m"))
    summarise(known, record)
    assert record["status"] == "known" and record["capture"] == "cpu" and record["reason"] is None


def test_generic_reasons():
    assert generic("view from (1, 56, 56, 96) to (1, 8, 7, 8, 7, 96) splits") == \
        "view from (…) to (…) splits"
    assert generic("op x in m (4×) has") == "op x in m (N×) has"


# the pool ---------------------------------------------------------------------------------------

def test_pool_survives_a_hang_and_a_crash():
    entries = [fake("a"), fake("hang"), fake("b"), fake("crash"), fake("c")]
    seen = []
    result = sweep("timm", entries=entries, job=FAKE, workers=2, timeout=2, on_record=seen.append)
    names = [r["name"] for r in result.records]
    assert names == ["a", "hang", "b", "crash", "c"]  # in the listing's order
    by = {r["name"]: r for r in result.records}
    assert by["hang"]["status"] == "failed" and "timed out after 2 s" in by["hang"]["reason"]
    assert by["crash"]["status"] == "failed" and "exit code 7" in by["crash"]["reason"]
    assert all(by[n]["status"] == "known" for n in "abc")
    assert len(seen) == 5
    assert len(result.startups) >= 3  # two workers, and a fresh one after the kill or the crash
    assert result.counts() == {"known": 3, "unknown": 0, "failed": 2, "skipped": 0}


def test_pool_recycles_workers():
    result = sweep("timm", entries=[fake(f"m{k}") for k in range(5)], job=FAKE, workers=1, recycle=2)
    pids = [r["pid"] for r in result.records]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert len(result.startups) == 3


def test_sweep_rejects_bad_settings():
    with pytest.raises(RflensError, match="--workers 0"):
        sweep("timm", entries=[], workers=0)
    with pytest.raises(RflensError, match="--timeout"):
        sweep("timm", entries=[], timeout=0)


# JSON and Markdown ------------------------------------------------------------------------------

def _records():
    base = empty_record(fake("x"))

    def rec(name, family, status, **kw):
        return {**base, "name": name, "family": family, "status": status, "input": [[3, 224, 224]], **kw}

    return (rec("vit_a", "vision_transformer", "unknown", first_unknown="pos_drop",
                why_unknown=["cat along (1, 197, 768)"], unsupported={"aten.roll": 4}),
            rec("vit_b", "vision_transformer", "unknown", first_unknown="pos_drop",
                why_unknown=["cat along (1, 577, 768)"], unsupported={"aten.roll": 2, "aten.im2col": 1}),
            rec("vit_c", "vision_transformer", "known", first_global="blocks.0.attn", global_rows=5),
            rec("res_a", "resnet", "known", first_global="global_pool", global_rows=2),
            rec("res_b", "resnet", "failed", reason="timed out after 60 s (worker killed)"),
            rec("res_c", "resnet", "skipped", reason="needs the package foo, which is not installed"))


def test_json_round_trip_and_schema(tmp_path):
    result = ZooResult("timm", _records(), {"every": 1, "filter": [], "workers": 2, "timeout": 60.0},
                       12.5, (3.0, 4.0), {"torch": "x"})
    data = json.loads(result.to_json())
    assert data["kind"] == "rflens-zoo" and data["schema_version"] == 1 and data["source"] == "timm"
    assert data["counts"] == {"known": 2, "unknown": 2, "failed": 1, "skipped": 1}
    assert len(data["models"]) == 6
    path = tmp_path / "z.json"
    path.write_text(result.to_json())
    assert ZooResult.load(path) == result
    assert result.top_ops(20) == [("aten.roll", 2, 6), ("aten.im2col", 1, 1)]
    assert result.causes()[0] == ("cat along (…)", 2)
    with pytest.raises(RflensError, match="not an rflens zoo sweep"):
        ZooResult.from_dict({"layers": []})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(RflensError, match="is not JSON"):
        ZooResult.load(bad)


def test_markdown_tables():
    result = ZooResult("timm", _records(), {"every": 1, "workers": 2, "timeout": 60.0}, 12.5)
    text = page([result])
    assert text.startswith("# The model zoo")
    assert "| known | 2 | 33.3% |" in text and "| unknown | 2 | 33.3% |" in text
    family = next(line for line in text.splitlines() if line.startswith("| vision_transformer |"))
    cells = [c.strip() for c in family.strip("|").split("|")]
    assert cells[:7] == ["vision_transformer", "3", "1", "1", "2", "", ""]
    assert cells[7] == "`blocks.0.attn`" and "`aten.roll` (2)" in cells[8]
    assert cells[9] == "cat along (…) (2)"
    resnet = next(line for line in text.splitlines() if line.startswith("| resnet |"))
    assert [c.strip() for c in resnet.strip("|").split("|")][:7] == ["resnet", "3", "1", "1", "", "1", "1"]
    assert "| `aten.roll` | 2 | 6 |" in text
    assert "| res_b | resnet | failed | 3x224x224 |  | timed out after 60 s (worker killed) |" in text
    assert "| vit_c |" not in text  # known models are not listed one by one


def test_cli_from_json_to_markdown(tmp_path, capsys):
    path = tmp_path / "z.json"
    path.write_text(ZooResult("torchvision", _records()).to_json())
    md = tmp_path / "zoo.md"
    assert main(["zoo", "--from", str(path), "--markdown", str(md)]) == 0
    assert "## torchvision" in md.read_text()
    assert "6 models" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["zoo"], "give a zoo to sweep"),
    (["zoo", "timm", "--from", "x.json"], "not both"),
    (["zoo", "--from", "missing.json"], "cannot read missing.json"),
    (["zoo", "torchvision", "--filter", "nothing*"], "no torchvision model matches"),
])
def test_cli_errors(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_cli_sweep_end_to_end(tmp_path, capsys):
    """Two small torchvision models through real worker processes, to JSON and Markdown."""
    out, md = tmp_path / "tv.json", tmp_path / "tv.md"
    assert main(["zoo", "torchvision", "--filter", "resnet18", "--filter", "squeezenet1_1", "--workers", "1",
                 "-o", str(out), "--markdown", str(md)]) == 0
    data = json.loads(out.read_text())
    assert [m["name"] for m in data["models"]] == ["resnet18", "squeezenet1_1"]
    assert all(m["status"] == "known" and m["worker_rss_mb"] > 0 for m in data["models"])
    assert data["settings"]["filter"] == ["resnet18", "squeezenet1_1"] and data["settings"]["workers"] == 1
    assert "| resnet | 1 | 1 | 1 |" in md.read_text()
    err = capsys.readouterr().err
    assert "known" in err and "resnet18" in err and "wrote" in err
