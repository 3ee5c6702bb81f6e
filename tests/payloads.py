"""The payload experiment of the injection tests (tests/integration/test_injection_runs.py,
tests/integration/test_secrets.py): payloads in every string field of an experiment that
reaches a host, each of which would create a marker file of its own if any shell or any
Jinja evaluated it, and the check that every payload arrived as one unchanged argument."""

import json
import shutil
from pathlib import Path

import yaml

from harness.run.placeholders import fill
from tests.builders import BAD

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
            "server": {
                "role": "server",
                "port": port,
                "command": ["python3", "{workload}/server.py", "{server_address}", "{port}", *server_words],
                "config": {"template": template, "vars": config_vars},
            },
            "load": {
                "role": "client",
                "parser": "fetch_json",
                "timeout": 30,
                "command": ["python3", "{workload}/client.py", "{server_address}", "{port}", "{count}", *load_words],
            },
        }

    experiment = {
        "version": 1,
        "claim": {
            "id": "injection",
            "statement": f"{SCRIPT} " + " ".join(payloads.all_for("claim.statement")),
            "source": {
                "file": f"{SCRIPT} " + " ".join(payloads.all_for("claim.source.file")),
                "section": " ".join(payloads.all_for("claim.source.section")),
            },
            "claimed_ratio": 2.0,
            "metric": " ".join(payloads.all_for("claim.metric")),
            "unit": "s",
            "better": "lower",
        },
        "roles": {"server": "servers", "client": "clients"},
        "workload": workload.name,
        # Ansible gets the build's argv: shell payloads only here
        # (Jinja: see test_jinja_in_fields_that_reach_ansible_runs_nothing)
        "provision": {
            "builds": [
                {
                    "name": "noop",
                    "role": "server",
                    "sources": [source],
                    "flags": [
                        "-O0",
                        *(f"-DPAYLOAD{i}={text}" for i, text in enumerate(payloads.shell("provision.builds.0.flags"))),
                    ],
                }
            ]
        },
        "parameters": {"count": 3, **parameters},
        "variants": {"slow": variant(ports[0]), "fast": variant(ports[1])},
        "pairs": [{"name": "fast_vs_slow", "baseline": "slow", "treatment": "fast"}],
        "repetitions": 2,
        "adaptive": {"max_repetitions": 2},
    }
    path = folder / f"injection {payloads.name('the experiment file name')}.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False, allow_unicode=True))
    return {
        "path": path,
        "parameters": parameters,
        "config_vars": config_vars,
        "server_words": [fill(word, parameters) for word in server_words],
        "load_words": [fill(word, parameters) for word in load_words],
    }


def check_run(run_dir: Path, written: dict) -> None:
    """Every payload reached the server, the load generator and the config as written."""
    raw = run_dir / "raw"
    server_logs = sorted(raw.glob("*-server.log"))
    load_errs = sorted(raw.glob("*-load*.err"))
    # 2 variants x 2 repetitions, and one more for each trial a validity gate had run again
    assert len(server_logs) == len(load_errs) >= 4
    for log in server_logs:
        argv = json.loads(log.read_text().splitlines()[0])
        assert argv[2:] == written["server_words"]
    for err in load_errs:
        argv = json.loads(err.read_text().splitlines()[0])
        assert argv[3:] == written["load_words"]
    configs = [path for path in raw.iterdir() if path.name.split("-", 2)[-1].startswith("conf ")]
    # one rendered config per trial, reruns included
    assert len(configs) == len(server_logs)
    expected = "".join(f"{key} = {fill(value, {})}\n" for key, value in written["config_vars"].items())
    for config in configs:
        assert config.read_text() == expected
    html = (run_dir / "index.html").read_text()
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["experiment"]["parameters"]["word0"] == written["parameters"]["word0"]
