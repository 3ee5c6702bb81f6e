"""Time provisioning of 1 lab host against 8: the issue's target is under 2x.

    .venv/bin/python experiments/calibration/provision_scaling.py

Creates two labs (1 and 8 hosts), runs snapshot, apply (the sendfile
experiment's packages, sysctls, build and a 1 MiB data file; every host in
every role) and restore on each, prints the seconds, and removes the labs.
"""

import tempfile
import time
from pathlib import Path

from harness import spec as spec_module
from harness.lab import lab_down, lab_up
from harness.provision import Provisioner

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "sendfile.yaml"


def provision_seconds(hosts: int) -> dict[str, float]:
    name = f"ps{hosts}"
    base = Path(tempfile.mkdtemp(prefix="scaling-"))
    try:
        lab = lab_up(name=name, hosts=hosts, base_dir=base)
        spec = spec_module.load(EXPERIMENT)
        every = tuple(lab.harness_host(host) for host in lab.hosts)
        provisioner = Provisioner(lab.inventory, [h.name for h in every], base / "logs", lambda: False)
        run_id = f"scaling-{hosts}-{int(time.time())}"
        times = {}
        started = time.monotonic()
        state = provisioner.snapshot(list(spec.provision.sysctls))
        times["snapshot"] = time.monotonic() - started
        try:
            started = time.monotonic()
            provisioner.apply(
                spec,
                spec_module.workload_dir(spec, EXPERIMENT),
                {"server": every, "client": every},
                {**spec.parameters, "file_size": "1MiB"},
                run_id,
            )
            times["apply"] = time.monotonic() - started
        finally:
            started = time.monotonic()
            provisioner.restore(state, Provisioner.workdir_for(run_id))
            times["restore"] = time.monotonic() - started
        return times
    finally:
        lab_down(name=name, base_dir=base)


if __name__ == "__main__":
    one, eight = provision_seconds(1), provision_seconds(8)
    for stage in one:
        print(
            f"{stage:<9} 1 host {one[stage]:6.1f} s   8 hosts {eight[stage]:6.1f} s"
            f"   ratio {eight[stage] / one[stage]:.2f}"
        )
    total_one, total_eight = sum(one.values()), sum(eight.values())
    print(
        f"{'total':<9} 1 host {total_one:6.1f} s   8 hosts {total_eight:6.1f} s   ratio {total_eight / total_one:.2f}"
    )
