"""A lab of hosts on this machine: network namespaces on one bridge, each with its own sshd.

`lab_up` builds the lab and writes an Ansible inventory for it, so experiments run
against lab hosts the way they run against real ones: over SSH, as root, with
host-key checking on. `lab_status` reports what exists; `lab_down` removes it all.
Nothing here prints: a failure is a LabError naming the host and the step.

Layout of lab NAME with N hosts, every address in 198.18.0.0/15 (RFC 2544):

    bridge NAME-br       in the root namespace, 198.18.K.1/24 (K picked per lab)
    namespace NAME-hI    lo up; eth0 198.18.K.(10+I)/24 with Q rx and Q tx queues;
                         its own hostname (NAME-hI) and its own sshd on port 22
    veth NAME-hI         the root-side end of NAME-hI's eth0, a port of the bridge
    BASE/NAME/           client key, known_hosts, inventory.ini, lab.json, NAME-hI/ (sshd files)

Link properties (`LinkProperties`: queues, mtu, rate, loss, delay) apply to every host's
eth0, the same on each host, so traffic between two hosts meets them once per direction;
links.py says how each is put in place (veth queues, ip link mtu, TBF, nftables, netem or
a delay proxy).

lab.json records each property with the mechanism used; `lab_status` reads back what is
in place (tc qdisc, ip link, nft list table) and reports any difference as a problem.

The package, one part of the lab per module:

    model.py      the values: LinkProperties, LinkMechanisms, Lab, LabHost, LabStatus, ...
    topology.py   lab_up, lab_status, lab_down: checks, bridge, namespaces and veths
    links.py      link shaping on eth0 (tc, nftables) and reading it back
    sshd.py       keys, known_hosts, each host's sshd, waiting for SSH
    state.py      lab.json and inventory.ini; discovering what of a lab exists
    system.py     commands on this machine, processes, package installs
"""

from harness.hosts.lab.links import describe_link
from harness.hosts.lab.model import (
    HostStatus,
    Lab,
    LabHost,
    LabStatus,
    LinkInPlace,
    LinkMechanisms,
    LinkProperties,
    LinkPropertyError,
    LinkStatus,
)
from harness.hosts.lab.topology import DEFAULT_BASE_DIR, lab_down, lab_status, lab_up

__all__ = [
    "DEFAULT_BASE_DIR",
    "HostStatus",
    "Lab",
    "LabHost",
    "LabStatus",
    "LinkInPlace",
    "LinkMechanisms",
    "LinkProperties",
    "LinkPropertyError",
    "LinkStatus",
    "describe_link",
    "lab_down",
    "lab_status",
    "lab_up",
]
