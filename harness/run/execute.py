"""One trial: start the variant's server, wait until it listens, run the load
generator once, and always stop both (in `finally`, with signals held off).

The trial records the server's CPU time over the load (from /proc, read before
and after, never during), the load generator's (from the shell's `times` after
it exits) and this process's own CPU time over the same window, so a report
shows whether the harness stayed off the CPU while it measured.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from harness import resources
from harness.cpuset import CpuSet, placed
from harness.errors import HarnessError, TrialError
from harness.hosts import nftables
from harness.hosts.inventory import Host
from harness.hosts.linkdelay import start_delay_proxy
from harness.hosts.provision import Workspace
from harness.hosts.remote import Background, HostSession
from harness.run import accounting
from harness.run.interrupt import StopSignals
from harness.run.placeholders import DELAY_KEY, LOSS_KEY, fill
from harness.run.plan import Trial
from harness.run.spec import ExperimentSpec, Variant

TIMEOUT_EXIT = 124  # coreutils timeout's status when the time ran out
PROXY_ADDRESS = "127.0.0.1"  # the delay proxy listens on the client host's loopback
PROXY_PORT_OFFSET = 10000  # proxy port = server port + this


@dataclass(frozen=True)
class TrialSetting:
    """What every trial of a run shares."""

    spec: ExperimentSpec
    hosts_by_role: dict[str, tuple[Host, ...]]
    sessions: dict[str, HostSession]  # by host name
    workspace: Workspace
    parameters: dict
    workload_dir: Path  # the workload folder on this machine (config templates)
    raw_dir: Path  # where raw outputs are kept on this machine
    # Added delay through harness/hosts/delay_proxy.py on the client host, for links
    # without netem; the load generator then talks to the proxy, not the server.
    proxy_delay_ms: float | None = None
    # `harness run --cpus`: the only CPUs servers and load generators may use (see CpuSet.place).
    cpu_restriction: CpuSet | None = None
    # A seam for tests, deliberately: trial -> a CPU steal share to add to the trial's readings
    # (on the CPUs it was allowed to use), or None. Lets a test make chosen trials fail the steal
    # gate through the real path (counters -> gates -> replacement). Never set by the CLI.
    fake_steal: Callable[[Trial], float | None] | None = None


@dataclass(frozen=True)
class TrialOutput:
    trial: Trial
    load_stdouts: tuple[str, ...]  # one per run of the load command (load.runs)
    load_files: tuple[str, ...]  # their raw copies, relative to the run directory's raw/ folder
    load_cpu_seconds: float | None  # the load generator's CPU time over all its runs
    server_cpu_seconds: float
    harness_cpu_seconds: float
    wall_seconds: float
    # Per host: how its counters (remote.HostSession.counters) moved over the load window.
    host_changes: dict[str, dict[str, float]]
    host_cpus: dict[str, float]  # per host: number of CPUs, to turn steal ticks into a share
    # Per machine (hosts sharing one kernel), keyed by the first such host: the CPUs the trial's
    # processes were allowed to use there (None: any), the roles that ran there, the hosts, and
    # whether the harness itself runs on it (see placement()).
    placement: dict[str, dict] = field(default_factory=dict)
    setup_seconds: float | None = None  # from the trial's start to the load window's
    teardown_seconds: float | None = None  # from the load window's end to the trial's


def run_trial(trial: Trial, setting: TrialSetting, signals: StopSignals) -> TrialOutput:
    trial_started = time.monotonic()
    variant = setting.spec.variants[trial.variant]
    client_host = setting.hosts_by_role[variant.load.role][0]
    # A variant without a server (a microbenchmark) runs its load command alone.
    server_host = setting.hosts_by_role[variant.server.role][0] if variant.server else client_host
    server_session = setting.sessions[server_host.name]
    client_session = setting.sessions[client_host.name]
    stem = f"{trial.index:03d}-{trial.variant}"
    values = _placeholder_values(setting, variant, server_host, trial)
    if variant.server and variant.server.config:
        _install_config(setting, variant, values, server_session, stem)
    load_values = dict(values)
    delay_ms = _delay_ms(setting, trial) if variant.server else None
    if delay_ms:
        load_values.update(server_address=PROXY_ADDRESS, port=variant.server.port + PROXY_PORT_OFFSET)
    load_argv = [fill(word, load_values) for word in variant.load.command]
    server_log = f"{setting.workspace.workdir}/{stem}-server.log"
    load_pidfile = f"{setting.workspace.workdir}/{stem}-load.pid"

    if variant.net:
        for host in dict.fromkeys((server_host, client_host)):
            _tune(setting.sessions[host.name], host, variant.net, trial)
    loss = _loss_percent(trial) if variant.server else None
    server: Background | None = None
    proxy: Background | None = None
    load_done = False

    def clean_up() -> list[str]:  # reads server, proxy and load_done as the trial left them
        return _clean_up(
            server_session,
            client_session,
            server,
            proxy,
            server_log,
            load_pidfile,
            load_done,
            setting.raw_dir,
            stem,
            loss,
        )

    try:
        if loss:
            with signals.deferred():
                _drop_share(server_session, variant.server.port, loss, trial)
        if variant.server:
            # Signals wait until the pid is known: a Ctrl-C between spawning the server and
            # learning its pid would leave a server nobody stops.
            with signals.deferred():
                server = server_session.start_background(
                    [fill(word, values) for word in variant.server.command],
                    setting.workspace.workdir,
                    server_log,
                    _allowed_cpus(variant.server.cpus, setting),
                )
            signals.check()
            server_session.wait_listening(
                server, variant.server.port, variant.server.ready_timeout, variant.server.protocol
            )
        if delay_ms:
            with signals.deferred():
                proxy = start_delay_proxy(
                    client_session,
                    f"{PROXY_ADDRESS}:{load_values['port']}",
                    f"{server_host.service_address}:{values['port']}",
                    delay_ms,
                    setting.workspace.workdir,
                    udp=variant.server.protocol == "udp",
                    copy_program=not client_host.local,
                )
            signals.check()
        involved = {server_host.name: server_session, client_host.name: client_session}
        # The counters' own window (midpoint of each read to midpoint) is what their deltas cover;
        # it is longer than the load's wall time by the reads around it, and the gates divide by it.
        read_started = time.monotonic()
        counters_before, cpu_before = _read_counters(involved, server_host.name, server)
        window_started = (read_started + time.monotonic()) / 2
        harness_before = accounting.own_cpu_seconds()
        started = time.monotonic()
        stdouts, files, load_cpu = [], [], 0.0
        for run in range(variant.load.runs):
            signals.check()
            name = f"{stem}-load" + (f"-{run + 1}" if variant.load.runs > 1 else "")
            result = client_session.shell(
                accounting.load_script(
                    load_argv,
                    load_pidfile,
                    _allowed_cpus(variant.load.cpus, setting),
                    variant.load.timeout,
                    client_session.process_journal,
                ),
                timeout=variant.load.timeout + 30,
                check=False,
                shown=load_argv[0],
                quiet=True,  # the load window
            )
            stderr, cpu = accounting.split_load_cpu(result.stderr)
            (setting.raw_dir / f"{name}.out").write_text(result.stdout)
            (setting.raw_dir / f"{name}.err").write_text(stderr)
            _check_load_run(
                result.exited,
                stderr or result.stdout,
                trial,
                variant,
                load_argv,
                client_host,
                server_session,
                server,
                server_host,
                server_log,
                stem,
                name,
            )
            stdouts.append(result.stdout)
            files.append(f"{name}.out")
            load_cpu = load_cpu + cpu if cpu is not None and load_cpu is not None else None
        wall = time.monotonic() - started
        harness_cpu = accounting.own_cpu_seconds() - harness_before
        load_done = True
        read_started = time.monotonic()
        counters_after, cpu_after = _read_counters(involved, server_host.name, server)
        window = (read_started + time.monotonic()) / 2 - window_started
        if variant.result:
            # The receiving side's count replaces the load generator's values.
            stdouts, files = [_result_output(setting, variant, values, wall, trial, stem)], [f"{stem}-result.out"]
        placement = accounting.placement(
            setting.sessions, setting.cpu_restriction, _roles(variant, server_host, client_host)
        )
        host_changes = {
            name: {**accounting.counter_changes(counters_before[name], counters_after[name]), "window_seconds": window}
            for name in involved
        }
        if setting.fake_steal is not None:
            accounting.add_fake_steal(host_changes, placement, setting.fake_steal(trial), window)
        output = TrialOutput(
            trial=trial,
            load_stdouts=tuple(stdouts),
            load_files=tuple(files),
            load_cpu_seconds=load_cpu,
            server_cpu_seconds=cpu_after - cpu_before,
            harness_cpu_seconds=harness_cpu,
            wall_seconds=wall,
            host_changes=host_changes,
            host_cpus={name: counters_after[name].get("cpus", 1.0) for name in involved},
            placement=placement,
        )
    except BaseException:
        with signals.deferred():  # the trial's own error is the one to report
            clean_up()
        raise
    with signals.deferred():
        problems = clean_up()
    if problems:
        raise TrialError("; ".join(problems))
    return dataclasses.replace(
        output,
        setup_seconds=started - trial_started,
        teardown_seconds=time.monotonic() - started - output.wall_seconds,
    )


def _clean_up(
    server_session, client_session, server, proxy, server_log, load_pidfile, load_done, raw_dir, stem, loss=None
) -> list[str]:
    """Stop whatever of the trial still runs and keep the server's log; return what went wrong."""
    problems = []
    if loss:
        try:
            nftables.remove_port_loss(server_session)
        except HarnessError as exc:
            problems.append(str(exc))
    if not load_done:
        # Interrupted mid-load: `timeout` leads the load's process group.
        script = (
            f"[ -s {shlex.quote(load_pidfile)} ] && pid=$(cat {shlex.quote(load_pidfile)}) && "
            "{ kill -TERM -- -$pid 2>/dev/null; sleep 0.5; kill -KILL -- -$pid 2>/dev/null; }; true"
        )
        try:
            client_session.shell(script, timeout=30, check=False, shown="stop load")
        except HarnessError as exc:
            problems.append(str(exc))
    if proxy is not None:
        try:
            client_session.stop(proxy)
        except HarnessError as exc:
            problems.append(str(exc))
    if server is not None:
        try:
            server_session.stop(server)
        except HarnessError as exc:
            problems.append(str(exc))
        try:
            server_session.get(server_log, raw_dir / f"{stem}-server.log")
        except (HarnessError, OSError) as exc:
            problems.append(f"could not fetch {server_log}: {exc}")
    return problems


HOST_STATE_TEXT = resources.HOST_STATE_SCRIPT.read_text()


def _tune(session: HostSession, host: Host, net, trial: Trial) -> None:
    """Set the variant's steering on the device carrying the host's address and read it back
    (playbooks/files/host_state.py tune, the script provisioning uses); the run's restore
    puts the snapshot's values back."""
    # The script goes as `python3 -c TEXT`, as the playbooks send it: nothing to copy per trial.
    given = json.dumps({"address": host.service_address, "net": net.model_dump(exclude_none=True)})
    result = session.shell(
        f"printf %s {shlex.quote(given)} | /usr/bin/python3 -c {shlex.quote(HOST_STATE_TEXT)} tune",
        timeout=60,
        check=False,
        shown="tune the link",
    )
    if result.exited != 0:
        raise TrialError(f"{host.name}: variants.{trial.variant}.net: {_last_line(result.stderr or result.stdout)}")


def _result_output(setting: TrialSetting, variant: Variant, values: dict, wall: float, trial: Trial, stem: str) -> str:
    result = variant.result
    host = setting.hosts_by_role[result.role][0]
    argv = [fill(word, {**values, "load_seconds": f"{wall:.6f}"}) for word in result.command]
    output = setting.sessions[host.name].run(argv, timeout=result.timeout, check=False)
    (setting.raw_dir / f"{stem}-result.out").write_text(output.stdout)
    (setting.raw_dir / f"{stem}-result.err").write_text(output.stderr)
    if output.exited != 0:
        raise TrialError(
            f"{host.name}: the result command {argv[0]} exited {output.exited}: "
            f"{_last_line(output.stderr or output.stdout)} (raw/{stem}-result.err; "
            f"variants.{trial.variant}.result)"
        )
    return output.stdout


def _check_load_run(
    exited, output, trial, variant, load_argv, client_host, server_session, server, server_host, server_log, stem, name
) -> None:
    """One run of the load generator went wrong: say how, naming the host and the raw file."""
    if server is not None and not server_session.is_alive(server):
        raise TrialError(
            f"{server_host.name}: the {trial.variant} server exited during the load: "
            f"{_last_line(server_session.read_text(server_log, tail_bytes=2000))} (log raw/{stem}-server.log)"
        )
    if exited == TIMEOUT_EXIT:
        raise TrialError(
            f"{client_host.name}: {load_argv[0]} did not finish within {variant.load.timeout:g} s "
            f"(variants.{trial.variant}.load.timeout)"
        )
    if exited != 0:
        raise TrialError(f"{client_host.name}: {load_argv[0]} exited {exited}: {_last_line(output)} (raw/{name}.err)")


def _allowed_cpus(pinned: CpuSet | None, setting: TrialSetting) -> str | None:
    """The `taskset -c` list for a process pinned to `pinned`, under the run's --cpus."""
    cpus = placed(pinned, setting.cpu_restriction)
    return str(cpus) if cpus is not None else None


def _loss_percent(trial: Trial) -> float | None:
    swept = trial.condition.as_dict().get(LOSS_KEY)
    return float(swept) if swept else None


def _drop_share(session: HostSession, port: int, percent: float, trial: Trial) -> None:
    """Drop `percent` of the packets to and from the server's port, each way, with nftables
    on the server host: only this trial's traffic, never SSH. The trial's clean-up deletes
    the table; the run's restore deletes it too if a trial could not."""
    refused = nftables.add_port_loss(session, port, percent)
    if refused is not None:
        raise TrialError(
            f"{session.host.name}: {LOSS_KEY}={percent:g} (trial {trial.variant}): nft refused the "
            f"loss rules: {refused}"
        )


def _delay_ms(setting: TrialSetting, trial: Trial) -> float | None:
    """The one-way delay the proxy adds: the condition's swept delay_ms, else the link's."""
    swept = trial.condition.as_dict().get(DELAY_KEY)
    if swept is not None:
        return float(swept) or None
    return setting.proxy_delay_ms


def _placeholder_values(setting: TrialSetting, variant: Variant, server_host: Host, trial: Trial) -> dict:
    workspace = setting.workspace
    values = dict(setting.parameters)
    values.update(trial.condition.as_dict())
    values.update(
        workdir=workspace.workdir,
        workload=workspace.workload,
        bin=workspace.bin,
        data=workspace.data,
        port=variant.server.port if variant.server else 0,
        server_address=server_host.service_address,
        config=f"{workspace.workdir}/{variant.server.port if variant.server else 0}.conf",
        python=getattr(workspace, "python", "python3"),
    )
    return values


def _install_config(setting, variant, values, session: HostSession, stem: str) -> None:
    """Render the variant's Jinja config template and copy it to the server host."""
    config = variant.server.config
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(setting.workload_dir),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # nginx configs, not HTML
    )
    template_vars = dict(values)
    template_vars.update({key: fill(v, values) if isinstance(v, str) else v for key, v in config.vars.items()})
    try:
        text = environment.get_template(config.template).render(template_vars)
    except jinja2.TemplateError as exc:
        raise TrialError(f"{setting.workload_dir / config.template}: cannot render: {exc}") from None
    local = setting.raw_dir / f"{stem}-{Path(config.template).stem}"
    local.write_text(text)
    session.put(local, values["config"])


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def _read_counters(
    involved: dict[str, HostSession], server_host: str, server: Background | None
) -> tuple[dict[str, dict[str, float]], float]:
    """Every involved host's counters, read at once (one call per host, the hosts side by
    side), and the server session's CPU seconds from the same call on its host."""

    def read(name: str) -> dict[str, float]:
        return involved[name].counters(server if name == server_host else None)

    if len(involved) == 1:
        readings = {name: read(name) for name in involved}
    else:
        with ThreadPoolExecutor(max_workers=len(involved)) as pool:
            readings = dict(zip(involved, pool.map(read, involved), strict=True))
    server_ns = readings[server_host].pop("server_cpu_ns", 0.0)
    return readings, server_ns / 1e9 if server is not None else 0.0


def _roles(variant: Variant, server_host: Host, client_host: Host) -> list[tuple[str, Host, CpuSet | None]]:
    """(role, host, pinned CPUs) of each process the trial starts."""
    server = [("server", server_host, variant.server.cpus)] if variant.server else []
    return [*server, ("load", client_host, variant.load.cpus)]
