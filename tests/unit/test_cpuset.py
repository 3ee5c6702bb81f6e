"""CpuSet: the one grammar of CPU lists, and a pin mapped through a --cpus restriction."""

import pytest

from harness.cpuset import CpuListError, CpuSet, placed


@pytest.mark.parametrize(
    "text, cpus",
    [
        ("0", (0,)),
        ("3", (3,)),
        ("0-1", (0, 1)),
        ("0,2", (0, 2)),
        ("0-2,5", (0, 1, 2, 5)),
        ("4-4", (4,)),
        ("2,0", (2, 0)),  # order kept: it says which allowed CPU is "CPU 0" under a restriction
        ("0,0-1", (0, 1)),  # a CPU named twice counts once
        ("10-12", (10, 11, 12)),
    ],
)
def test_cpu_numbers_and_ranges_parse(text, cpus):
    parsed = CpuSet.parse(text)
    assert parsed.cpus == cpus and len(parsed) == len(cpus) and list(parsed) == list(cpus)
    assert str(parsed) == text  # manifests and reports show what was given


@pytest.mark.parametrize(
    "text", ["", ",", "0,", ",0", "0,,1", "0-1-2", "0--1", "-1", "1-", "a", "0-a", " 0", "0 ", "0;1", "0x1", "1.5"]
)
def test_anything_else_is_refused_with_advice(text):
    with pytest.raises(CpuListError) as caught:
        CpuSet.parse(text)
    assert str(caught.value) == f"{text!r}: give CPU numbers and ranges, e.g. 0 or 0-1 or 0,2"
    assert caught.value.message(quote='"').endswith('e.g. "0" or "0-1" or "0,2"')


def test_a_downward_range_is_refused_and_named():
    with pytest.raises(CpuListError, match=r"^'0,2-1': the range 2-1 runs downward; give CPU numbers"):
        CpuSet.parse("0,2-1")


def test_equal_sets_compare_equal_whatever_their_text():
    assert CpuSet.parse("0-1") == CpuSet.parse("0,1") == CpuSet((0, 1))
    assert str(CpuSet((0, 1))) == "0,1"
    assert CpuSet.parse("0-2").highest == 2
    with pytest.raises(ValueError):
        CpuSet(())


def test_under_a_restriction_cpu_i_is_the_i_th_allowed_cpu():
    restriction = CpuSet.parse("4-5")
    assert str(restriction.place(CpuSet.parse("0"))) == "4"
    assert str(restriction.place(CpuSet.parse("1"))) == "5"
    assert str(restriction.place(CpuSet.parse("2"))) == "4"  # fewer allowed CPUs: wraps round
    assert str(restriction.place(CpuSet.parse("0-3"))) == "4,5"  # each allowed CPU once
    assert str(restriction.place(None)) == "4,5"  # no pin: every allowed CPU, listed one by one
    assert str(CpuSet.parse("1").place(CpuSet.parse("0"))) == "1"


def test_placed_leaves_a_pin_alone_without_a_restriction():
    pin = CpuSet.parse("0-1")
    assert placed(pin, None) is pin
    assert placed(None, None) is None
    assert placed(None, CpuSet.parse("3")) == CpuSet((3,))
    assert placed(pin, CpuSet.parse("2,7")) == CpuSet((2, 7))


@pytest.mark.parametrize("text", ["0-1-2", "2-1", ","])
def test_the_cpus_option_refuses_what_the_grammar_refuses(text):
    from click.testing import CliRunner

    from harness.cli import main

    result = CliRunner().invoke(main, ["run", "experiments/sendfile.yaml", "--cpus", text])
    assert result.exit_code == 2
    assert f"Invalid value for '--cpus': {text!r}: " in result.output
