"""Checking one random program (tests/programs.py) against the gradient-support oracle
(tests/corners.py): used by tests/test_property_programs.py and the soak (tests/soak.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

try:
    from corners import SupportOracle, compare_rows
    from programs import Program
except ImportError:  # tests/ made a package
    from tests.corners import SupportOracle, compare_rows
    from tests.programs import Program


@dataclass(frozen=True)
class Finding:
    """One disagreement. ``kind``: ``box`` (a clipped box that is neither the hull nor a flagged
    superset), ``global`` (a 'global' flag on a program without any op that reads a whole
    axis), ``names`` (rows named after
    torch.compile's wrapper) — these are *silent wrong answers*; ``unknown`` (a row rflens
    marks unknown) and ``error`` (rflens raised on a program PyTorch runs) are honest gaps;
    ``missing`` (no root row for an output that reads the input) is a refusal too;
    ``harness`` is a failure of the generator or the oracle."""

    kind: str
    detail: str

    @property
    def silent(self) -> bool:
        return self.kind in ("box", "global", "names")


def _strip_compile(name: str) -> str:
    return name.replace("._orig_mod", "").replace("_orig_mod.", "").replace("_orig_mod", "")


def check_program(program: Program, seed: int = 0, units: int = 30, rows: int = 3) -> list[Finding]:
    """rflens against the oracle on one program: the root row and up to ``rows - 1`` module rows,
    ``units`` sampled units each (borders favoured)."""
    import warnings

    import rflens

    try:
        model, inputs = program.build()
        twin, twin_inputs = program.build(twin=True)
        oracle = SupportOracle(twin, twin_inputs, program.grid, seed=seed)
    except Exception as exc:  # noqa: BLE001
        return [Finding("harness", f"{type(exc).__name__}: {exc}")]
    subject = model
    if program.compiled:
        subject = torch.compile(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rf = rflens.receptive_field(subject, example_inputs=inputs)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).splitlines()[0] if str(exc) else ""
        return [Finding("error", f"{type(exc).__name__}: {first[:300]}")]
    findings = []
    wrapped = [n for n in rf.names if "_orig_mod" in n]
    if wrapped:
        findings.append(Finding("names", f"rows named after the compile wrapper: {wrapped[:3]}"))
    rng = random.Random(seed)
    by_oracle_name = {_strip_compile(n): n for n in rf.names}
    if "output" not in by_oracle_name:
        hulls = oracle.hulls("output", oracle.units("output")[:units])
        if any(h is not None for h in hulls):
            findings.append(Finding("missing", f"no 'output' row, yet the output reads the input "
                                               f"(rows: {rf.names[:6]})"))
        return findings
    picked = [n for n in program.rows if n in by_oracle_name]
    picked = ["output"] + rng.sample(picked, min(rows - 1, len(picked)))
    unknown = [n for n in picked if not rf[by_oracle_name[n]].known]
    for name in unknown:
        row = rf[by_oracle_name[name]]
        findings.append(Finding("unknown", f"row {name!r}: {', '.join(row.unknown_ops + row.lost)}"))
    known = [by_oracle_name[n] for n in picked if n not in unknown]
    try:
        bad = compare_rows(rf, oracle, rows=known, rename=_strip_compile, max_units=units, seed=seed)
        findings += [Finding("box", line) for line in bad]
        if "reduce" not in program.features:  # nothing else the generator draws pools an axis
            findings += [Finding("global", f"row {n!r} is flagged global; the program has no op "
                                           "that reads a whole axis") for n in known if rf[n].is_global]
    except Exception as exc:  # noqa: BLE001
        findings.append(Finding("harness", f"oracle: {type(exc).__name__}: {exc}"))
    return findings
