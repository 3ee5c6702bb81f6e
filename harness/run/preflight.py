"""Pre-flight: what a run checks and records about its hosts before it measures.

Every host answers; each host's CPU topology is recorded (and held against the
experiment's `requires`); the links between load generators and servers are
described; the servers' ports are free; `--cpus` names CPUs the hosts have. All of
it reads and changes nothing on the hosts, except the CPU check, which needs the
facts that provisioning's snapshot gathers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from harness.cpuset import CpuSet
from harness.errors import HarnessError
from harness.hosts.hoststate import HostState
from harness.hosts.remote import HostSession
from harness.results import store
from harness.results.store import RunDirectory
from harness.run import collect
from harness.run.spec import ExperimentSpec


def check_reachable(sessions: dict[str, HostSession]) -> None:
    """Every host answers before anything is changed anywhere; checked in parallel
    so that several dead hosts cost one connect timeout, not one each."""
    with ThreadPoolExecutor(max_workers=min(16, len(sessions))) as pool:
        futures = {name: pool.submit(session.run, ["true"], 30) for name, session in sessions.items()}
    for future in futures.values():
        future.result()  # raises the first host's HostError


TOPOLOGY_SCRIPT = r"""
echo "cpus $(getconf _NPROCESSORS_ONLN)"
echo "numa_nodes $(ls -d /sys/devices/system/node/node[0-9]* 2>/dev/null | wc -l)"
echo "--- lscpu"; lscpu 2>/dev/null
echo "--- NUMA nodes (cpulist)"
for node in /sys/devices/system/node/node[0-9]*; do [ -d "$node" ] && echo "${node##*/}: $(cat "$node/cpulist")"; done
if command -v numactl >/dev/null; then echo "--- numactl -H"; numactl -H 2>&1; fi
if command -v hwloc-ls >/dev/null; then echo "--- hwloc-ls"; hwloc-ls --of console 2>&1; fi
true
"""


def topology(sessions: dict[str, HostSession], run: RunDirectory) -> dict[str, dict]:
    """Each host's CPUs and NUMA nodes; the whole description is kept in raw/."""
    found = {}
    for name, session in sessions.items():
        text = session.shell(TOPOLOGY_SCRIPT, timeout=60, shown="read the CPU topology").stdout
        store.write_atomically(run.topology_file(name), text)
        counts = dict(line.split(" ", 1) for line in text.splitlines()[:2] if " " in line)
        found[name] = {
            key: int(counts[key]) if counts.get(key, "").strip().isdigit() else None for key in ("cpus", "numa_nodes")
        }
    return found


def unmet_requirements(spec: ExperimentSpec, topology: dict[str, dict]) -> str | None:
    """The first requirement of the experiment a host does not meet, said in words."""
    for host, facts in topology.items():
        for key, words in (("numa_nodes", "NUMA node"), ("cpus", "CPU")):
            needed = getattr(spec.requires, key)
            have = facts.get(key)
            if needed is not None and have is not None and have < needed:
                return (
                    f"{host} has {have} {words}{'s' if have != 1 else ''}; the claim needs at least {needed} "
                    f"(requires.{key}), so this host cannot test it. Its topology: {RunDirectory.topology_name(host)}."
                )
    return None


def describe_links(spec: ExperimentSpec, hosts_by_role, sessions: dict[str, HostSession]) -> list[store.Link]:
    """How each load generator reaches its server: the route's device and its properties."""
    links: dict[tuple[str, str], store.Link] = {}
    for variant in spec.variants.values():
        if variant.server is None:
            continue
        client = hosts_by_role[variant.load.role][0]
        server = hosts_by_role[variant.server.role][0]
        if (client.name, server.name) not in links:
            description = collect.describe_link(sessions[client.name], server.service_address)
            links[(client.name, server.name)] = store.Link(client.name, server.name, description)
    return list(links.values())


def proxy_delay(spec: ExperimentSpec, links: list[store.Link]) -> float | None:
    """The experiment's delay, when the links lack netem to give it: the proxy adds it."""
    if not spec.link.delay_ms:
        return None
    if links and all("netem" in link.description for link in links):
        return None
    return spec.link.delay_ms


def check_ports_free(spec: ExperimentSpec, hosts_by_role, sessions: dict[str, HostSession]) -> None:
    for name, variant in spec.variants.items():
        for host in hosts_by_role[variant.server.role][:1] if variant.server else ():
            if sessions[host.name].port_in_use(variant.server.port, variant.server.protocol):
                raise HarnessError(
                    f"{host.name}: port {variant.server.port} (variants.{name}.server.port) is already in use; "
                    "stop what listens there or pick another port"
                )


def check_cpus(cpus: CpuSet | None, state: HostState | None) -> None:
    """--cpus names only CPUs every host has (by the CPU count in the snapshot's facts)."""
    if cpus is None:
        return
    for host, fact in (state.facts if state else {}).items():
        cores = fact.get("cores")
        if isinstance(cores, int) and cores and cpus.highest >= cores:
            raise HarnessError(f"{host}: --cpus {cpus} names CPU {cpus.highest}, but the host has {cores} CPUs")
