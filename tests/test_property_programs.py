"""Random programs with the constructs of issue 11 (tests/programs.py) against the oracle.

One property per construct family: every program of the family holds its construct (several
inputs, a view then an in-place write of its base, slice assignment, ``out=``, fresh buffers
filled through slices, circular/reflect/replicate pads, an embedding on a label map,
``torch.compile``, same-size resizes, reductions over one axis broadcast back, buffer-mask
selections) among random convs, pools, pads, upsamplings, transposed convs, residuals and
channel concatenations; ``mixed`` draws several constructs at once. A program passes when every
compared unit's clipped box equals the oracle hull (or the row says it may be a superset and
contains it), no row is unknown, rflens does not raise, no row is flagged global that no unit
shows, and no row is named after the compile wrapper.

The examples are derandomized (the same programs on every run), so a family that current rflens
gets wrong fails deterministically: such families are ``xfail(strict=True)`` with the issue class,
to be unmarked when the fix lands. ``make soak`` (tests/soak.py) draws 10,000+ programs instead.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from program_check import check_program
from programs import HypothesisDraw, draw_features, draw_program

FAMILIES = {
    "base": (),
    "padmode": ("padmode",),
    "inputs": ("inputs",),
    "view": ("view",),
    "setitem": ("setitem",),
    "out": ("out",),
    "fresh": ("fresh",),
    "labels": ("labels",),
    "compiled": ("compiled",),
    "resize": ("resize",),
    "reduce": ("reduce",),
    "select": ("select",),
}

KNOWN_WRONG: dict[str, str] = {}  # family -> issue class and what rflens gets wrong (none now)

_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 phases=[Phase.explicit, Phase.generate],
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])


def _run(data: st.DataObject, features: tuple[str, ...]) -> None:
    draw = HypothesisDraw(data)
    program = draw_program(draw, features)
    seed = draw.int(0, 2 ** 16)
    findings = check_program(program, seed)
    if findings:
        lines = "\n".join(f"[{f.kind}] {f.detail}" for f in findings[:8])
        pytest.fail(f"{len(findings)} finding(s):\n{lines}\n\nrepro:\n{program.repro()}", pytrace=False)


def _family(name: str):
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_WRONG[name])] if name in KNOWN_WRONG else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("family", [_family(n) for n in FAMILIES])
@settings(max_examples=12, **_SETTINGS)
@given(data=st.data())
def test_programs_match_the_oracle(family: str, data: st.DataObject, one_thread) -> None:
    _run(data, FAMILIES[family])


@settings(max_examples=12, **_SETTINGS)
@given(data=st.data())
def test_mixed_programs_match_the_oracle(data: st.DataObject, one_thread) -> None:
    draw = HypothesisDraw(data)
    _run(data, draw_features(draw, p_special=1.0, p_mixed=1.0) or ("view", "out"))


@settings(max_examples=30, **_SETTINGS)
@given(data=st.data())
def test_base_programs_many(data: st.DataObject, one_thread) -> None:
    """Programs without the new constructs (and with pad modes) must already be exact."""
    draw = HypothesisDraw(data)
    _run(data, ("padmode",) if draw.bool(0.5) else ())
