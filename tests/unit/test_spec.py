"""The experiment schema: what it accepts, and the one-line errors for what it rejects."""

import pytest

from harness.cpuset import CpuSet
from harness.errors import SpecError
from harness.run import spec
from harness.run.placeholders import parse_size
from harness.run.profile import resolve_profile
from tests.builders import ROOT


def edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def error_of(path):
    with pytest.raises(SpecError) as caught:
        spec.load(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_sendfile_experiment_loads():
    loaded = spec.load(ROOT / "experiments" / "sendfile.yaml")
    assert loaded.claim.id == "sendfile"
    assert loaded.claim.claimed_ratio == 3.5
    assert loaded.claim.better == "lower"
    assert [p.name for p in loaded.pairs] == ["python", "nginx"]
    # the YAML merge key gives the sendfile variant the readwrite server's role and CPUs
    assert loaded.variants["python_sendfile"].server.cpus == CpuSet((0,))
    assert loaded.variants["python_sendfile"].server.port == 18082
    assert resolve_profile(loaded, quick=True).parameters["file_size"] == "256MiB"
    assert resolve_profile(loaded, quick=False).parameters["file_size"] == "1GiB"
    assert resolve_profile(loaded, quick=True).repetitions == 5


def test_unknown_key_names_file_line_and_field(experiment_copy):
    edit(experiment_copy, "  metric: seconds per transfer\n", "  metric: seconds per transfer\n  colour: blue\n")
    message = error_of(experiment_copy)
    line = experiment_copy.read_text().splitlines().index("  colour: blue") + 1
    assert message.endswith(
        f"sendfile.yaml:{line}: claim.colour: unknown field (see the README's experiment file format)"
    )


def test_wrong_type_names_the_nested_field(experiment_copy):
    edit(experiment_copy, "      port: 18084", "      port: 'eighteen'")
    message = error_of(experiment_copy)
    assert "variants.nginx_sendfile_on.server.port" in message
    assert "valid integer" in message
    line = next(i for i, text in enumerate(experiment_copy.read_text().splitlines(), 1) if "eighteen" in text)
    assert f":{line}:" in message


def test_missing_field(experiment_copy):
    edit(experiment_copy, "  claimed_ratio: 3.5\n", "")
    assert error_of(experiment_copy).endswith("claim.claimed_ratio: required field is missing")


def test_malformed_yaml_gives_the_line(experiment_copy):
    edit(experiment_copy, "repetitions: 10", "repetitions: [10")
    message = error_of(experiment_copy)
    assert "YAML syntax error" in message
    assert "sendfile.yaml:" in message


def test_pair_must_name_existing_variants(experiment_copy):
    edit(experiment_copy, "treatment: nginx_sendfile_on", "treatment: nginx_sendfile_maybe")
    assert "pairs.1.treatment: no variant named 'nginx_sendfile_maybe'" in error_of(experiment_copy)


def test_unknown_placeholder(experiment_copy):
    edit(experiment_copy, '"{transfers_per_run}"]', '"{transfers}"]')
    message = error_of(experiment_copy)
    assert "unknown placeholder {transfers}" in message
    assert "variants.python_readwrite.load.command.4" in message


def test_role_must_be_declared(experiment_copy):
    edit(experiment_copy, "      role: client\n      sources", "      role: router\n      sources")
    assert "provision.builds.0.role: role 'router' is not in roles" in error_of(experiment_copy)


def test_bad_size(experiment_copy):
    edit(experiment_copy, "file_size: 256MiB", "file_size: 256MB")
    assert "must be a positive whole number of B, KiB, MiB or GiB" in error_of(experiment_copy)


def test_missing_source_file(experiment_copy):
    (experiment_copy.parent / "sendfile" / "fetch.c").unlink()
    assert "provision.builds.0.sources.0: no file 'fetch.c'" in error_of(experiment_copy)


def test_duplicate_key(experiment_copy):
    edit(experiment_copy, "repetitions: 10\n", "repetitions: 10\nrepetitions: 12\n")
    assert "repetitions: duplicate key" in error_of(experiment_copy)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "must hold a mapping" in error_of(path)


def test_missing_file(tmp_path):
    assert error_of(tmp_path / "absent.yaml").endswith("absent.yaml: no such file")


@pytest.mark.parametrize("text, size", [("1GiB", 1 << 30), ("256MiB", 256 << 20), ("7B", 7)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0MiB", "1GB", "-1MiB", "1.5GiB", ""])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_a_source_may_not_leave_the_workload_folder(experiment_copy):
    edit(experiment_copy, "sources: [fetch.c]", "sources: [../sendfile.yaml]")
    assert "provision.builds.0.sources.0: '../sendfile.yaml' leaves the workload folder" in error_of(experiment_copy)


def test_a_symlinked_source_must_point_into_the_catalog(experiment_copy):
    source = experiment_copy.parent / "sendfile" / "fetch.c"
    source.unlink()
    source.symlink_to("/etc/hostname")
    assert "'fetch.c' links outside the workload folder and experiments/" in error_of(experiment_copy)
    source.unlink()
    source.symlink_to(ROOT / "experiments" / "sendfile" / "fetch.c")
    assert spec.load(experiment_copy).claim.id == "sendfile"


@pytest.mark.parametrize(
    "text, why",
    [("0-1-2", ""), ("2-1", "the range 2-1 runs downward; "), (",", ""), ("0,", ""), ("all", ""), (" 0", "")],
)
def test_a_cpu_list_field_takes_the_one_grammar(experiment_copy, text, why):
    edit(experiment_copy, 'cpus: "1"', f'cpus: "{text}"')
    message = error_of(experiment_copy)
    assert message.endswith(
        f":58: variants.python_readwrite.load.cpus: {text!r}: {why}give CPU numbers and ranges, "
        'e.g. "0" or "0-1" or "0,2"'
    ), message


def test_a_cpu_list_field_is_text_not_a_number(experiment_copy):
    edit(experiment_copy, 'cpus: "1"', "cpus: 1")
    assert error_of(experiment_copy).endswith(
        ":58: variants.python_readwrite.load.cpus: Input should be a valid string, got a number"
    )


def test_a_cpu_list_field_holds_a_cpu_set_and_writes_back_its_text(experiment_copy):
    edit(experiment_copy, 'cpus: "1"', 'cpus: "2-3,0"')
    load = spec.load(experiment_copy).variants["python_readwrite"].load
    assert load.cpus.cpus == (2, 3, 0) and str(load.cpus) == "2-3,0"
    assert load.model_dump()["cpus"] == "2-3,0"  # what Ansible and the tune script receive


def test_the_quick_profile_is_resolved_in_one_place():
    loaded = spec.load(ROOT / "experiments" / "sendfile.yaml")
    full, quick = (
        resolve_profile(loaded, quick=False),
        resolve_profile(loaded, quick=True, target=0.02, cpus=CpuSet.parse("0-1")),
    )
    assert (full.quick, quick.quick) == (False, True)
    assert (full.parameters["file_size"], quick.parameters["file_size"]) == ("1GiB", "256MiB")
    assert set(quick.parameters) == set(loaded.parameters)  # quick overrides, never adds
    assert (full.repetitions, full.stopping.maximum, full.stopping.target) == (10, 30, 0.05)
    assert (quick.repetitions, quick.stopping.maximum, quick.stopping.target) == (5, 5, 0.02)
    assert full.cpus is None and str(quick.cpus) == "0-1"


def test_a_quick_sweep_replaces_the_full_lists_and_quick_max_repetitions_lets_it_go_on():
    loaded = spec.load(ROOT / "experiments" / "sendfile.yaml")
    loaded = loaded.model_copy(
        update={
            "sweep": {"connections": [1, 8, 64]},
            "quick": loaded.quick.model_copy(update={"sweep": {"connections": [8]}, "max_repetitions": 9}),
        }
    )
    full, quick = resolve_profile(loaded, quick=False), resolve_profile(loaded, quick=True)
    assert full.sweep == {"connections": [1, 8, 64]} and quick.sweep == {"connections": [8]}
    assert (quick.stopping.minimum, quick.stopping.maximum) == (5, 9)
