"""Bad input, as users run the CLI: every fixture in tests/fixtures/bad/ holds one fault
(its first line says which). Each must end in exit status 1 and exactly one stderr line,
`error: ...`, naming the file and line, the field or the host; no traceback; and nothing
written outside the --out directory.

"Nothing written" is checked two ways: the command runs in an empty working directory with
its own empty TMPDIR, which must stay empty; and, where strace exists, every file the
command (and its children) created, changed, renamed or removed must lie in --out or in a
place listed in ALLOWED_ELSEWHERE. Runs that reach Ansible are checked the first way only:
strace makes them minutes long.
"""

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.builders import BAD, HARNESS, ROOT, VALID

STRACE = shutil.which("strace")
HOME = Path.home()

# Writes outside --out that are not the harness's own doing, and are allowed.
ALLOWED_ELSEWHERE = (
    Path("/dev"),  # /dev/null, ptys, multiprocessing's semaphores in /dev/shm
    Path("/proc"),
    HOME / ".ansible" / "tmp",  # ansible-inventory's and ansible-playbook's scratch folders, removed again
    HOME / ".cache" / "matplotlib",  # matplotlib's font cache
    HOME / ".config" / "matplotlib",
    # `git status` in pipeline._git_commit refreshes the checkout's index under this lock;
    # test_a_run_takes_no_lock_in_the_git_checkout below is that bug.
    ROOT / ".git" / "index.lock",
    ROOT / ".git" / "index",
)
# calls that write a path, and those that move the working directory relative paths start from
TRACED_SYSCALLS = (
    "open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,"
    "unlink,unlinkat,rmdir,truncate,chdir,fchdir"
)

# fixture -> the start of its one error line after "error: FIXTURE"; each names the line and
# the field at fault, then what is wrong.
SCHEMA_FAULTS = {
    # YAML syntax
    "yaml_tab_indent.yaml": ":6: YAML syntax error: found character '\\t' that cannot start any token",
    # The parser notices the unclosed quote where the next double quote confuses it.
    "yaml_unclosed_quote.yaml": ":16: YAML syntax error: expected <block end>",
    "yaml_nested_colon.yaml": ":8: YAML syntax error: mapping values are not allowed here",
    "yaml_unclosed_flow.yaml": ":12: YAML syntax error: expected ',' or '}'",
    "yaml_two_documents.yaml": ":24: YAML syntax error: but found another document",
    "yaml_undefined_alias.yaml": ":16: YAML syntax error: found undefined alias 'server'",
    # empty or not a mapping
    "empty.yaml": ":1: the file is empty",
    "document_marker_only.yaml": ":1: the file must hold a mapping",
    "top_level_text.yaml": ":1: the file must hold a mapping (claim:, roles:, variants: ...), not text",
    # wrong types
    "ratio_as_text.yaml": ":7: claim.claimed_ratio: Input should be a valid number, got text",
    "repetitions_fraction.yaml": ":23: repetitions: Input should be a valid integer",
    "command_as_string.yaml": ":16: variants.slow.server.command: Input should be a valid list, got text",
    "version_2.yaml": ":2: version: Input should be 1",
    "port_boolean.yaml": ":19: variants.fast.server.port: Input should be a valid integer, got a boolean",
    "variants_as_list.yaml": ":14: variants: Input should be a valid dictionary, got a list",
    "parameter_mapping.yaml": ":13: parameters.count: Input should be a valid string, got a mapping",
    # unknown keys
    "unknown_top_level_key.yaml": ":24: repetitons: unknown field",
    "unknown_server_key.yaml": ":19: variants.fast.server.threads: unknown field",
    "unknown_pair_key.yaml": ":22: pairs.0.ratio: unknown field",
    # roles, variants, pairs
    "load_role_not_declared.yaml": ":20: variants.fast.load.role: role 'driver' is not in roles (client, server)",
    "roles_empty.yaml": ":11: roles: Dictionary should have at least 1 item",
    "variants_missing.yaml": ":1: variants: required field is missing",
    "one_variant.yaml": ":14: variants: Dictionary should have at least 2 items",
    "pair_with_itself.yaml": ":22: pairs.0.treatment: baseline and treatment must differ",
    # non-positive ratios, durations and sizes
    "ratio_zero.yaml": ":7: claim.claimed_ratio: Input should be greater than 0",
    "ratio_negative.yaml": ":7: claim.claimed_ratio: Input should be greater than 0",
    "load_timeout_negative.yaml": ":20: variants.fast.load.timeout: Input should be greater than 0",
    "ready_timeout_zero.yaml": ":19: variants.fast.server.ready_timeout: Input should be greater than 0",
    "time_budget_zero.yaml": ":24: adaptive.time_budget_s: Input should be greater than 0",
    "tolerance_below_one.yaml": ":24: analysis.k: Input should be greater than or equal to 1",
    "data_size_zero.yaml": ":15: provision.data.0.size: size '0MiB' must be a positive whole number",
    # absurd repetition counts
    "repetitions_million.yaml": ":23: repetitions: Input should be less than or equal to 1000",
    "repetitions_one.yaml": ":23: repetitions: Input should be greater than 1",
    "repetitions_negative.yaml": ":23: repetitions: Input should be greater than 1",
    "quick_repetitions_zero.yaml": ":24: quick.repetitions: Input should be greater than 0",
    "max_repetitions_huge.yaml": ":24: adaptive.max_repetitions: Input should be less than or equal to 1000",
    "warmup_values_huge.yaml": ":24: warmup_values: Input should be less than or equal to 100",
    # paths outside the project
    "workload_parent.yaml": ":12: workload: '../../..' leaves the experiment's folder",
    "workload_absolute.yaml": ":12: workload: '/etc' leaves the experiment's folder",
    "workload_missing.yaml": f":12: workload: no folder {BAD / 'no_such_folder'}",
    "config_template_outside.yaml": ":19: variants.fast.server.config.template: '../../../../../../etc/passwd' leaves "
    "the workload folder",
    "source_absolute.yaml": ":15: provision.builds.0.sources.0: '/etc/hostname' leaves the workload folder",
    # other values out of range
    "port_privileged.yaml": ":19: variants.fast.server.port: Input should be greater than or equal to 1024",
    "cpus_word.yaml": ':19: variants.fast.server.cpus: \'all\': give CPU numbers and ranges, e.g. "0" or "0-1"',
    "parser_unknown.yaml": ":20: variants.fast.load.parser: Input should be 'fetch_json'",
    "placeholder_attribute.yaml": ":20: variants.fast.load.command.3: unknown placeholder {port.__class__}",
    "quick_parameter_unknown.yaml": ":24: quick.parameters.rounds: 'rounds' is not in parameters",
}

# inventory -> the error line after "error: ". These fail before any host is touched, so
# no run directory may exist afterwards.
INVENTORY_FAULTS = {
    "inventory_empty.ini": "{inventory}: role 'server' needs hosts in group [servers], which has none (groups: none)",
    "inventory_empty_group.ini": "{inventory}: role 'client' needs hosts in group [clients], which has none "
    "(groups: servers)",
    "inventory_syntax.ini": "{inventory}:2: section header '[servers' lacks its closing ']'",
    "inventory_hosts_list.yml": '{inventory}: Invalid "hosts" entry for "servers" group, requires a dictionary',
    "inventory_port_text.ini": "{inventory}: host remote: ansible_port 'ssh' is not a number",
    "inventory_port_range.ini": "{inventory}: host remote: ansible_port 70000 is not a TCP port (1-65535)",
    "inventory_key_missing.ini": "{inventory}: host remote: ansible_ssh_private_key_file "
    "/nonexistent/harness-test-key: no such readable file",
    "inventory_known_hosts_missing.ini": "{inventory}: host remote: UserKnownHostsFile (ansible_ssh_common_args) "
    "/nonexistent/harness-known-hosts: no such readable file",
}

# inventory -> the error line after "error: ", for hosts that cannot be reached. These run in
# a network namespace of their own with only loopback, so nothing leaves this machine and
# both faults are immediate; the run directory exists and keeps what the run gathered.
HOST_FAULTS = {
    "inventory_unreachable.ini": "unreachable: cannot reach 198.18.254.254:22: Network is unreachable",
    # the resolver's wording varies ("Temporary failure in name resolution", "Name or service not known")
    "inventory_unknown_host.ini": "no-such-host.invalid: cannot reach no-such-host.invalid:22: ",
}


def test_there_are_at_least_30_fixtures_each_saying_what_is_wrong():
    fixtures = [path for path in BAD.iterdir() if path.is_file() and path != VALID]
    assert len(fixtures) >= 30
    for path in fixtures:
        first = path.read_bytes().split(b"\n", 1)[0]
        assert first.startswith(b"# FAULT: ") and len(first) > 20, path
    tested = set(SCHEMA_FAULTS) | set(INVENTORY_FAULTS) | set(HOST_FAULTS) | {"latin1.yaml", "missing_load_tool.yaml"}
    assert tested == {path.name for path in fixtures}


def test_the_valid_base_validates(tmp_path):
    result = watched(["validate", VALID], tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{VALID}: ok (bad_input, 2 variants, 1 pairs)\n"


@pytest.mark.parametrize("name", sorted(SCHEMA_FAULTS))
def test_validate_names_the_line_and_field(name, tmp_path):
    result = watched(["validate", BAD / name], tmp_path)
    assert_one_error(result, f"error: {BAD / name}{SCHEMA_FAULTS[name]}")
    assert result.stdout == ""


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    result = watched(["validate", BAD / "latin1.yaml"], tmp_path)
    assert_one_error(result, f"error: {BAD / 'latin1.yaml'}:5: not UTF-8 text")


# Every `harness run` case starts at once, since each spends seconds importing and some
# run Ansible; the tests below check one result each.
RUN_CASES = {
    "schema_fault": (["run", BAD / "repetitions_million.yaml"], {}),
    **{name: (["run", VALID, "--inventory", BAD / name], {}) for name in INVENTORY_FAULTS},
    **{name: (["run", VALID, "--inventory", BAD / name], {"namespace": True}) for name in HOST_FAULTS},
    # provisioning runs on this machine through Ansible: strace would make it minutes long
    "missing_load_tool.yaml": (["run", BAD / "missing_load_tool.yaml"], {"trace": False, "timeout": 300}),
    "git_lock": (
        ["run", VALID, "--inventory", BAD / "inventory_unreachable.ini"],
        {"namespace": True, "allowed": ALLOWED_ELSEWHERE[:-2]},
    ),
}


@pytest.fixture(scope="module")
def isolated_namespace():
    """A network namespace with loopback only: no route to anywhere else."""
    name = f"hbad{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=30)


@pytest.fixture(scope="module", autouse=True)
def runs(request, tmp_path_factory):
    """case -> (its --out directory, a future of the checked CompletedProcess), for the
    cases whose tests are selected. Started before the module's first test, so the
    validate tests run while these do."""
    selected = {_run_case(item) for item in request.session.items if item.module.__name__ == __name__} - {None}
    if not STRACE:
        selected.discard("git_lock")  # its test is skipped
    with ThreadPoolExecutor(max_workers=6) as pool:
        started = {}
        for case in selected:
            args, options = RUN_CASES[case]
            base = tmp_path_factory.mktemp(case.replace(".", "_"))
            if options.get("namespace"):
                options = dict(options, namespace=request.getfixturevalue("isolated_namespace"))
            started[case] = (
                base / "out",
                pool.submit(watched, [*args, "--out", base / "out"], base, out=base / "out", **options),
            )
        yield started


def _run_case(item) -> str | None:
    """The RUN_CASES entry a test checks, if any."""
    fixed = {
        "test_run_stops_on_a_schema_fault_before_writing_anything": "schema_fault",
        "test_run_names_the_host_that_lacks_a_tool": "missing_load_tool.yaml",
        "test_a_run_takes_no_lock_in_the_git_checkout": "git_lock",
    }
    if item.originalname in fixed:
        return fixed[item.originalname]
    if item.originalname in ("test_run_names_the_inventory_fault", "test_run_names_the_host_it_cannot_reach"):
        return item.callspec.params["name"]
    return None


def test_run_stops_on_a_schema_fault_before_writing_anything(runs):
    out, result = runs["schema_fault"]
    assert_one_error(
        result.result(), f"error: {BAD / 'repetitions_million.yaml'}{SCHEMA_FAULTS['repetitions_million.yaml']}"
    )
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(INVENTORY_FAULTS))
def test_run_names_the_inventory_fault(name, runs):
    out, result = runs[name]
    assert_one_error(result.result(), "error: " + INVENTORY_FAULTS[name].format(inventory=BAD / name))
    assert not out.exists()


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(HOST_FAULTS))
def test_run_names_the_host_it_cannot_reach(name, runs):
    out, result = runs[name]
    line = assert_one_error(result.result(), f"error: {HOST_FAULTS[name]}", progress=True)
    (run_dir,) = out.iterdir()
    assert line.endswith(f"(results so far: {run_dir})")
    assert (run_dir / "manifest.json").is_file()
    assert not any((run_dir / "ansible").iterdir())  # it stopped before any playbook ran


@pytest.mark.integration
def test_run_names_the_host_that_lacks_a_tool(runs):
    """Provisioning runs on this machine, then the first trial's load generator is missing."""
    out, result = runs["missing_load_tool.yaml"]
    line = assert_one_error(result.result(), "error: trial 1 of ", progress=True)
    (run_dir,) = out.iterdir()
    assert re.search(r"\((slow|fast)\): localhost: harness-no-such-tool exited 127: .*No such file or directory", line)
    assert line.endswith(f"(results so far: {run_dir})")
    assert not Path("/var/tmp/harness", run_dir.name).exists()  # restored: the host's work folder is gone


@pytest.mark.integration
@pytest.mark.skipif(not STRACE, reason="needs strace to see a lock file that exists for milliseconds")
def test_a_run_takes_no_lock_in_the_git_checkout(runs):
    _, result = runs["git_lock"]
    assert result.result().returncode == 1


# --- helpers ------------------------------------------------------------------------------


def assert_one_error(result, start: str, progress: bool = False) -> str:
    """Exit 1 and one error line starting with `start`; with `progress`, the run's
    progress lines ("· stage", "  trial N: ...") may come before it."""
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    if progress:
        assert all(line.startswith(("· ", "  trial ")) for line in lines[:-1]), result.stderr[-2000:]
    else:
        assert len(lines) == 1, result.stderr[-2000:]
    assert lines[-1].startswith(start), (lines[-1], start)
    return lines[-1]


def watched(
    args,
    base: Path,
    out: Path | None = None,
    namespace: str | None = None,
    trace: bool = True,
    allowed=ALLOWED_ELSEWHERE,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Run the CLI from an empty directory with an empty TMPDIR; check that both stay
    empty and (with strace) that every write went to `out` or an allowed place."""
    cwd, tmpdir, traces = base / "cwd", base / "tmpdir", base / "strace"
    for folder in (cwd, tmpdir, traces):
        folder.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONDONTWRITEBYTECODE="1")
    argv = [str(HARNESS), *map(str, args)]
    if trace and STRACE:
        argv = [
            STRACE,
            "-f",
            "-ff",
            "-qq",
            "-y",
            "-e",
            f"trace={TRACED_SYSCALLS}",
            "-e",
            "signal=none",
            "-o",
            str(traces / "t"),
            *argv,
        ]
    if namespace:
        argv = ["ip", "netns", "exec", namespace, *argv]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout, check=False)
    assert list(cwd.iterdir()) == [], "the command wrote into its working directory"
    assert list(tmpdir.iterdir()) == [], "the command left files in TMPDIR"
    written = [path for trace_file in traces.iterdir() for path in _written_paths(trace_file, cwd)]
    places = (*allowed, tmpdir, *([out] if out else []))
    # creating the parents of an allowed place (~/.ansible on a fresh machine) is allowed too
    outside = sorted(
        {str(path) for path in written if not any(_inside(path, place) or _inside(place, path) for place in places)}
    )
    assert outside == [], "written outside --out"
    return result


_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")
_PATH = re.compile(r'(?:(-?\d+|AT_FDCWD)(?:<([^>]*)>)?,\s*)?"((?:[^"\\]|\\.)*)"')
_CWD = re.compile(r"AT_FDCWD<([^>]*)>")


def _written_paths(trace_file: Path, cwd: Path):
    """Paths that one traced process created, changed or removed (successful calls only).
    A relative path starts from the directory named with its dirfd (strace -y), else from
    the process's working directory as the trace last showed it."""
    for line in trace_file.read_text(errors="replace").splitlines():
        call = _CALL.match(line)
        if not call or int(call.group(3)) < 0:
            continue
        name, arguments = call.group(1), call.group(2)
        shown = _CWD.search(arguments)
        if shown:
            cwd = Path(shown.group(1))
        paths = [
            (directory, Path(text.encode().decode("unicode_escape"))) for _, directory, text in _PATH.findall(arguments)
        ]
        if name in ("chdir", "fchdir"):
            target = paths[0][1] if name == "chdir" else Path(re.search(r"<([^>]*)>", arguments).group(1))
            cwd = cwd / target
            continue
        if name in ("open", "openat") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", arguments):
            continue
        if name in ("link", "linkat", "symlink", "symlinkat"):
            paths = paths[-1:]  # the new name; the target is not written
        elif not name.startswith("rename"):
            paths = paths[:1]
        for directory, path in paths:
            yield Path(os.path.normpath(Path(directory) / path if directory else cwd / path))


def _inside(path: Path, place: Path) -> bool:
    return path == place or place in path.parents
