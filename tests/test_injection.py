"""No text from an experiment or an inventory is ever evaluated by a shell or a template
engine, and the report shows every text as text.

One experiment carries payloads in every string field that reaches a host: each payload
would create its own marker file if any shell (`$(...)`, backticks, `;`, `|`, `&&`, broken
quotes, a newline) or any Jinja (Ansible's, the config renderer's) evaluated it. The real
harness validates and runs it; afterwards no marker may exist, the server and the load
generator must have received every payload as one argument, unchanged, and the report
must show the HTML in the claim as text. Fields whose schema admits no such text must
reject it instead; so must the inventory's connection values.
"""

import json
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from harness.hosts import inventory
from harness.errors import InventoryError
from harness.run.placeholders import fill
from tests.conftest import HARNESS, ROOT

BAD = ROOT / "tests" / "fixtures" / "bad"
VALID = BAD / "valid.yaml"
SCRIPT = "<script>alert('pwned')</script>"
IMAGE = "<img src=x onerror=alert(1)>"

# "M" is replaced by a marker path. A shell that ran any of these would create the marker.
SHELL_PAYLOADS = (
    "$(touch M)",
    "`touch M`",
    "; touch M",
    "| touch M",
    "&& touch M",
    "' ; touch M ; '",  # ends a single-quoted word early
    '" ; touch M ; "',  # ends a double-quoted word early
    "x\ntouch M\n",  # a new command line in a script
)
# Ansible and Jinja evaluate this; str.format (the harness's {placeholders}) sees an escaped brace.
JINJA_PAYLOAD = "{{ lookup('pipe', 'touch M') }}"
# File and folder names cannot hold '/': these touch a marker in the home folder instead.
NAME_PAYLOADS = ("$(cd;touch M)", "`cd;touch M`", ";cd;touch M;")
JINJA_NAME_PAYLOAD = "{{ lookup('pipe', 'cd;touch M') }}"


class Payloads:
    """Hands out payloads, each aimed at a marker file of its own, and remembers where each
    one was put so a marker that appears names the field that let it through."""

    def __init__(self, token: str):
        self.token = token
        self.placed: dict[Path, str] = {}

    def _marker(self, field: str, in_home: bool) -> str:
        name = f"harness-pwned-{self.token}-{len(self.placed)}"
        path = Path.home() / name if in_home else Path("/tmp") / name
        self.placed[path] = field
        return name if in_home else str(path)

    def shell(self, field: str) -> list[str]:
        return [template.replace("M", self._marker(field, False)) for template in SHELL_PAYLOADS]

    def jinja(self, field: str) -> str:
        return JINJA_PAYLOAD.replace("M", self._marker(field, False))

    def jinja_name(self, field: str) -> str:
        return JINJA_NAME_PAYLOAD.replace("M", self._marker(field, True))

    def name(self, field: str) -> str:
        return "".join(template.replace("M", self._marker(field, True)) for template in NAME_PAYLOADS)

    def all_for(self, field: str) -> list[str]:
        return self.shell(field) + [self.jinja(field)]

    def fired(self) -> dict[str, str]:
        """marker -> field, for every marker that exists."""
        found = {str(path): field for path, field in self.placed.items() if path.exists()}
        # Also catch a marker written somewhere unexpected under its own name.
        for folder in (Path("/tmp"), Path.home(), Path("/var/tmp")):
            for path in folder.glob(f"harness-pwned-{self.token}-*"):
                found.setdefault(str(path), "somewhere")
        return found

    def clean(self) -> None:
        for folder in (Path("/tmp"), Path.home(), Path("/var/tmp")):
            for path in folder.glob(f"harness-pwned-{self.token}-*"):
                path.unlink()


def write_payload_experiment(folder: Path, payloads: Payloads, ports=(18293, 18294)) -> dict:
    """A copy of tests/fixtures/bad/valid.yaml with payloads in every string field that reaches a
    host and is free text in the schema; returns what the test checks against."""
    workload = folder / f"work {payloads.name('workload (folder name)')}"
    workload.mkdir(parents=True)
    for name in ("server.py", "client.py"):
        shutil.copyfile(BAD / "work" / name, workload / name)
    source = f"noop {payloads.name('provision.builds.0.sources')}.c"
    (workload / source).write_text("int main(void) { return 0; }\n")
    template = f"conf {payloads.name('variants.*.server.config.template')}.j2"
    config_vars = {f"v{i}": text for i, text in enumerate(payloads.all_for("variants.*.server.config.vars"))}
    (workload / template).write_text("".join(f"{key} = {{{{ {key} }}}}\n" for key in config_vars))

    parameters = {f"word{i}": text for i, text in enumerate(payloads.all_for("parameters"))}
    server_words = [f"{{{key}}}" for key in parameters] + payloads.all_for("variants.*.server.command")
    load_words = [f"{{{key}}}" for key in parameters] + payloads.all_for("variants.*.load.command")

    def variant(port: int) -> dict:
        return {
            "description": f"{IMAGE} " + " ".join(payloads.all_for("variants.*.description")),
            "server": {"role": "server", "port": port,
                       "command": ["python3", "{workload}/server.py", "{server_address}", "{port}", *server_words],
                       "config": {"template": template, "vars": config_vars}},
            "load": {"role": "client", "parser": "fetch_json", "timeout": 30,
                     "command": ["python3", "{workload}/client.py", "{server_address}", "{port}", "{count}",
                                 *load_words]},
        }

    experiment = {
        "version": 1,
        "claim": {
            "id": "injection",
            "statement": f"{SCRIPT} " + " ".join(payloads.all_for("claim.statement")),
            "source": {"file": f"{SCRIPT} " + " ".join(payloads.all_for("claim.source.file")),
                       "section": " ".join(payloads.all_for("claim.source.section"))},
            "claimed_ratio": 2.0,
            "metric": " ".join(payloads.all_for("claim.metric")),
            "unit": "s",
            "better": "lower",
        },
        "roles": {"server": "servers", "client": "clients"},
        "workload": workload.name,
        # Ansible gets the build's argv: shell payloads only here (Jinja: see test_jinja_in_fields_that_reach_ansible_runs_nothing)
        "provision": {"builds": [{"name": "noop", "role": "server", "sources": [source],
                                  "flags": ["-O0", *(f"-DPAYLOAD{i}={text}" for i, text in
                                                     enumerate(payloads.shell("provision.builds.0.flags")))]}]},
        "parameters": {"count": 3, **parameters},
        "variants": {"slow": variant(ports[0]), "fast": variant(ports[1])},
        "pairs": [{"name": "fast_vs_slow", "baseline": "slow", "treatment": "fast"}],
        "repetitions": 2,
        "adaptive": {"max_repetitions": 2},
    }
    path = folder / f"injection {payloads.name('the experiment file name')}.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False, allow_unicode=True))
    return {"path": path, "parameters": parameters, "config_vars": config_vars,
            "server_words": [fill(word, parameters) for word in server_words],
            "load_words": [fill(word, parameters) for word in load_words]}


def check_run(run_dir: Path, written: dict) -> None:
    """Every payload reached the server, the load generator and the config as written."""
    raw = run_dir / "raw"
    server_logs = sorted(raw.glob("*-server.log"))
    load_errs = sorted(raw.glob("*-load*.err"))
    assert len(server_logs) == len(load_errs) == 4  # 2 variants x 2 repetitions
    for log in server_logs:
        argv = json.loads(log.read_text().splitlines()[0])
        assert argv[2:] == written["server_words"]
    for err in load_errs:
        argv = json.loads(err.read_text().splitlines()[0])
        assert argv[3:] == written["load_words"]
    configs = [path for path in raw.iterdir() if path.name.split("-", 2)[-1].startswith("conf ")]
    assert len(configs) == 4
    expected = "".join(f"{key} = {fill(value, {})}\n" for key, value in written["config_vars"].items())
    for config in configs:
        assert config.read_text() == expected
    html = (run_dir / "index.html").read_text()
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["experiment"]["parameters"]["word0"] == written["parameters"]["word0"]


def payload_run(base: Path, payloads: Payloads) -> dict:
    """Validate and run the payload experiment on this machine."""
    written = write_payload_experiment(base / "experiment", payloads)
    checked = subprocess.run([str(HARNESS), "validate", str(written["path"])], capture_output=True, text=True,
                             timeout=60)
    out = base / f"out {payloads.name('--out')}"
    result = subprocess.run([str(HARNESS), "run", str(written["path"]), "--out", str(out)], capture_output=True,
                            text=True, timeout=600, cwd=base)
    return {"written": written, "checked": checked, "result": result, "out": out, "fired": payloads.fired()}


def jinja_run(base: Path, payloads: Payloads) -> dict:
    """Run an experiment with Jinja in the fields that become Ansible's extra vars. Each payload
    is placed so that, evaluated, it leaves a working value behind (the run goes on and every
    later payload is reached too); unevaluated, the run fails or the schema refuses it."""
    folder = base / "experiment"
    experiment = yaml.safe_load(VALID.read_text())
    # Evaluated, 'work{{ ... }}' is 'work' and 'noop{{ ... }}.c' is 'noop.c': both exist.
    experiment["workload"] = f"work{payloads.jinja_name('workload (folder name)')}"
    source = f"noop{payloads.jinja_name('provision.builds.0.sources')}.c"
    for name in ("work", experiment["workload"]):
        shutil.copytree(BAD / "work", folder / name)
        shutil.copyfile(BAD / "work" / "noop.c", folder / name / source)
    fin_timeout = _sysctl("net.ipv4.tcp_fin_timeout")
    experiment["provision"] = {
        # Evaluated, the value is the current one: nothing changes on this machine.
        "sysctls": {"net.ipv4.tcp_fin_timeout": payloads.jinja("provision.sysctls") + fin_timeout},
        "builds": [{"name": "noop", "role": "server", "sources": [source],
                    "flags": ["-O0", "-DFLAG" + payloads.jinja("provision.builds.0.flags")],
                    "libraries": [payloads.jinja("provision.builds.0.libraries") + "m"]}],
    }
    experiment["adaptive"] = {"max_repetitions": 2}
    path = folder / "jinja.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    result = subprocess.run([str(HARNESS), "run", str(path), "--out", str(base / "out")], capture_output=True,
                            text=True, timeout=600, cwd=base)
    return {"result": result, "fired": payloads.fired(),
            "fin_timeout": (fin_timeout, _sysctl("net.ipv4.tcp_fin_timeout"))}


def _sysctl(key: str) -> str:
    return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, check=True).stdout.strip()


RUNS = {"test_payloads_in_every_field_run_nothing": payload_run,
        "test_jinja_in_fields_that_reach_ansible_runs_nothing": jinja_run}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Both harness runs of this module at once (each spends most of its time in Ansible);
    only those whose tests are selected."""
    selected = {item.originalname for item in request.session.items if item.module.__name__ == __name__} & set(RUNS)
    placed = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = {}
        for test in selected:
            placed.append(Payloads(secrets.token_hex(4)))
            started[test] = pool.submit(RUNS[test], tmp_path_factory.mktemp(test[5:25]), placed[-1])
        yield started
    for payloads in placed:
        payloads.clean()


@pytest.mark.integration
def test_payloads_in_every_field_run_nothing(runs):
    run = runs["test_payloads_in_every_field_run_nothing"].result()
    assert run["fired"] == {}
    assert run["checked"].returncode == 0, run["checked"].stderr
    assert run["result"].returncode == 0, run["result"].stderr[-3000:]
    (run_dir,) = run["out"].iterdir()
    check_run(run_dir, run["written"])


# Fields that must be names or numbers: a payload there is refused by the schema.
REJECTED = {
    "claim.id": ("  id: bad_input", "  id: 'bad$(touch M)'"),
    "variants.slow": ("  slow:\n", "  'slow;touch M':\n"),
    "pairs.0.name": ("name: fast_vs_slow", "name: 'x`touch M`'"),
    "roles.server": ("roles: {server: servers,", "roles: {server: 'servers && touch M',"),
    "variants.fast.server.role": ("    server: {role: server, command: [python3, \"{workload}/server.py\", "
                                  "\"{server_address}\", \"{port}\"], port: 18292}",
                                  "    server: {role: 'server|touch M', command: [python3, \"{workload}/server.py\", "
                                  "\"{server_address}\", \"{port}\"], port: 18292}"),
    "variants.fast.server.cpus": ("port: 18292}", "port: 18292, cpus: '0;touch M'}"),
    "variants.fast.server.port": ("port: 18292}", "port: '18292;touch M'}"),
    "provision.packages.0": ("workload: work\n", "workload: work\nprovision: {packages: ['gcc; touch M']}\n"),
    "provision.sysctls": ("workload: work\n", "workload: work\nprovision: {sysctls: {'net.core.x$(touch M)': 1}}\n"),
    "provision.data.0.name": ("workload: work\n", "workload: work\nprovision: {data: [{name: 'a$(touch M)', "
                                                  "role: server, size: 1MiB}]}\n"),
    "provision.builds.0.name": ("workload: work\n", "workload: work\nprovision: {builds: [{name: 'b`touch M`', "
                                                    "role: server, sources: [noop.c]}]}\n"),
    "variants.fast.load.command.4": ("\"{port}\", \"{count}\"], parser: fetch_json, timeout: 30}\npairs",
                                     "\"{port}\", \"{count.__init__.__globals__}\"], parser: fetch_json, "
                                     "timeout: 30}\npairs"),
}


@pytest.mark.parametrize("field", sorted(REJECTED))
def test_fields_that_must_be_names_reject_payloads(field, tmp_path):
    old, new = REJECTED[field]
    marker = tmp_path / "marker"
    text = VALID.read_text()
    assert old in text
    shutil.copytree(BAD / "work", tmp_path / "work")
    path = tmp_path / "experiment.yaml"
    path.write_text(text.replace(old, new.replace("M", str(marker)), 1))
    result = subprocess.run([str(HARNESS), "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {path}:") and f": {field}" in line, line
    assert not marker.exists()


# case -> (the field the error names, the inventory line)
CONNECTION_PAYLOADS = {
    "ansible_host": ("ansible_host", "remote ansible_host='$(touch M)'"),
    "ansible_host_jinja": ("ansible_host", "remote ansible_host=\"{{ lookup('pipe', 'touch M') }}\""),
    "ansible_user": ("ansible_user", "remote ansible_host=127.0.0.1 ansible_user='root;touch M'"),
    "host_name": ("the name", "h$(touch${IFS}M) ansible_host=127.0.0.1"),
    "key_file": ("ansible_ssh_private_key_file",
                 "remote ansible_host=127.0.0.1 ansible_ssh_private_key_file='/x`touch M`'"),
    "known_hosts_jinja": ("UserKnownHostsFile (ansible_ssh_common_args)",
                          "remote ansible_host=127.0.0.1 "
                          "ansible_ssh_common_args='-o UserKnownHostsFile={{lookup(\"pipe\",\"touch M\")}}'"),
}


@pytest.mark.parametrize("case", sorted(CONNECTION_PAYLOADS))
def test_inventory_connection_values_with_payloads_are_refused(case, tmp_path):
    field, line = CONNECTION_PAYLOADS[case]
    marker = tmp_path / "marker"
    path = tmp_path / "inventory.ini"
    path.write_text(f"[servers]\n{line.replace('M', str(marker))}\n\n[clients]\nlocalhost ansible_connection=local\n")
    loaded = inventory.load(path)
    with pytest.raises(InventoryError) as refused:
        loaded.hosts_for({"server": "servers", "client": "clients"})
    assert str(refused.value).startswith(f"{path}: host ")
    assert f": {field} " in str(refused.value)
    assert not marker.exists()


def test_a_group_name_with_a_payload_is_not_an_inventory(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "inventory.ini"
    path.write_text(f"[servers]\nlocalhost ansible_connection=local\n[clients]\nlocalhost\n[x$(touch {marker})]\n"
                    "localhost\n")
    with pytest.raises(InventoryError, match=rf"^{path}:5: Invalid section entry"):
        inventory.load(path)
    assert not marker.exists()


def test_run_refuses_an_inventory_host_with_a_payload(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "inventory.ini"
    path.write_text(f"[servers]\nremote ansible_host='$(touch {marker})'\n\n"
                    "[clients]\nlocalhost ansible_connection=local\n")
    result = subprocess.run([str(HARNESS), "run", str(VALID), "--inventory", str(path), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == (f"error: {path}: host remote: ansible_host '$(touch {marker})' is not a host name "
                             "or an IP address\n")
    assert not (tmp_path / "out").exists()
    assert not marker.exists()


@pytest.mark.integration
def test_jinja_in_fields_that_reach_ansible_runs_nothing(runs):
    run = runs["test_jinja_in_fields_that_reach_ansible_runs_nothing"].result()
    assert "Traceback" not in run["result"].stderr
    before, after = run["fin_timeout"]
    assert after == before
    assert run["fired"] == {}
