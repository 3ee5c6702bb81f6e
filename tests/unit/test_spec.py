"""The experiment schema: what it accepts, and the one-line errors for what it rejects."""

import pytest

from harness.run import spec
from harness.errors import SpecError
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
    assert loaded.variants["python_sendfile"].server.cpus == "0"
    assert loaded.variants["python_sendfile"].server.port == 18082
    assert spec.parameters_for(loaded, quick=True)["file_size"] == "256MiB"
    assert spec.parameters_for(loaded, quick=False)["file_size"] == "1GiB"
    assert spec.repetitions_for(loaded, quick=True) == 5


def test_unknown_key_names_file_line_and_field(experiment_copy):
    edit(experiment_copy, "  metric: seconds per transfer\n", "  metric: seconds per transfer\n  colour: blue\n")
    message = error_of(experiment_copy)
    line = experiment_copy.read_text().splitlines().index("  colour: blue") + 1
    assert message.endswith(f"sendfile.yaml:{line}: claim.colour: unknown field (see the README's experiment file format)")


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
    assert spec.parse_size(text) == size


@pytest.mark.parametrize("text", ["0MiB", "1GB", "-1MiB", "1.5GiB", ""])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        spec.parse_size(text)


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
