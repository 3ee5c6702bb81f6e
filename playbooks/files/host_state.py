"""The host settings a run may change: read them, put them back, tune a device.

Run on a host by playbooks/snapshot.yml, provision.yml and restore.yml as
`python3 -c "$(cat host_state.py)" MODE` with JSON on stdin; prints one JSON
object on stdout. Standard library only: it runs on the host's own Python.
One script run instead of a task per setting keeps snapshot and restore at a
second or two per host: each Ansible task costs about as much as this whole script.

    read     {"sysctl_keys"} -> {"settings": {...}, "notes": [...], "ethtool": bool,
                                 "sysctls": {key: {"value"} or {"error"}}}
    restore  {"before": {}, "sysctls": {key: value}, "workdir"}
                             -> {"settings": {after}, "actions": [...], "failures": {setting: why},
                                 "sysctls": {key: {"after", "error", "written"}}, "workdir_error",
                                 "changed"}
    tune     {"address", "net": {rps_cpus, ...}}
                             -> {"device", "failures": {setting: why}, "changed"} or {"skipped": why, "changed"};
                                exits 1 with one line on stderr if any value reads back otherwise
    sysctls  {"sysctls": {key: value}}
                             -> {"sysctls": {key: value read back}, "failures": [...], "changed"};
                                exits 1 with the failures on stderr if any value did not take
    unpack   {"archive": base64 tar.gz, "into": folder, "folders": [...]}
                             -> {"changed": true}: makes the folders, unpacks the archive into `into`
    versions {"commands": [{tool, argv}]}
                             -> {"versions": {tool: {"stdout", "stderr"}}, "changed": false}

"changed" says whether the script altered anything on the host (a value that differed, a workdir
that was there): the playbooks report it to Ansible (changed_when).

A setting is one string key and one string value, so that a snapshot and a
later read compare key by key:

    /sys/class/net/D/queues/rx-N/rps_cpus      (also rps_flow_cnt; tx-N/xps_cpus)
    /proc/irq/N/smp_affinity
    /sys/devices/system/cpu/cpuN/cpufreq/scaling_governor
    /proc/sys/net/core/rps_sock_flow_entries   (only in the initial network namespace)
    qdisc D                                    every qdisc of D: "parent kind handle options; ..."
    xdp D                                      "none", or "MODE prog ID" per attached program
    ethtool -l D                               "rx=1 tx=1 other=n/a combined=n/a", or "unsupported"
    ethtool -k D FEATURE                       "on", "off", "on [fixed]", ...
    nftables table inet harness                "present" or "absent"

A file the kernel refuses to read (xps_cpus of a one-queue device) reads
"unreadable: ENOENT"; without ethtool installed the ethtool settings read
"unknown: no ethtool".
"""

import base64
import errno
import glob
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile

NFT_TABLE = ("inet", "harness")
XDP_MODES = {1: "xdpdrv", 2: "xdpgeneric", 3: "xdpoffload"}
DEFAULT_QDISC_HANDLE = "0:"  # a qdisc the kernel attached itself; one added by tc gets a handle of its own


def main():
    mode = sys.argv[1]
    given = json.loads(sys.stdin.read() or "{}")
    if mode == "read":
        settings, notes = read_settings(given.get("address"))
        result = {
            "settings": settings,
            "notes": notes,
            "ethtool": shutil.which("ethtool") is not None,
            "sysctls": {key: read_sysctl(key) for key in given.get("sysctl_keys", [])},
            "nic": describe_nic(given.get("address")),
        }
    elif mode == "restore":
        workdir = given.get("workdir") or ""
        had_workdir = bool(workdir) and os.path.lexists(workdir)
        result = restore(given.get("before", {}))
        result["sysctls"] = restore_sysctls(given.get("sysctls", {}))
        result["workdir_error"] = remove_workdir(workdir)
        result["changed"] = (
            bool(result["actions"])
            or any(item["written"] for item in result["sysctls"].values())
            or (had_workdir and not os.path.lexists(workdir))
        )
    elif mode == "tune":
        result = tune(given["address"], given["net"])
    elif mode == "sysctls":
        result = apply_sysctls(given["sysctls"])
    elif mode == "unpack":
        result = unpack(given)
    elif mode == "versions":
        result = {"versions": tool_versions(given["commands"]), "changed": False}
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    json.dump(result, sys.stdout, sort_keys=True)
    if mode == "tune" and result.get("failures"):
        # One line for the harness to show: every setting that did not take, and why.
        problems = "; ".join(f"{key}: {why}" for key, why in sorted(result["failures"].items()))
        raise SystemExit(f"provision.net on {result['device']} did not take: {problems}")
    if mode == "sysctls" and result["failures"]:
        raise SystemExit("; ".join(result["failures"]))


# --- reading --------------------------------------------------------------------


def read_settings(address=None):
    """Every setting of the devices a run uses: the one holding the host's service address,
    and lo; every device when no address is given. Devices others create and change while
    a run goes on (another lab, say) are no business of this run."""
    settings, notes = {}, []
    devices = net_devices()
    if address:
        used = {device_of(address), "lo"}
        devices = [device for device in devices if device in used]
    for device in devices:
        for path in sorted(
            glob.glob(f"/sys/class/net/{device}/queues/rx-*/rps_cpus")
            + glob.glob(f"/sys/class/net/{device}/queues/rx-*/rps_flow_cnt")
            + glob.glob(f"/sys/class/net/{device}/queues/tx-*/xps_cpus")
        ):
            settings[path] = read_file(path)
        # NAPI: threaded polling and interrupt deferral, which receive steering may change.
        for name in ("threaded", "gro_flush_timeout", "napi_defer_hard_irqs"):
            path = f"/sys/class/net/{device}/{name}"
            if os.path.exists(path):
                settings[path] = read_file(path)
    for path in glob.glob("/proc/irq/*/smp_affinity"):
        settings[path] = read_file(path)
    governors = glob.glob("/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")
    for path in governors:
        settings[path] = read_file(path)
    if not governors:
        notes.append("no CPU frequency governor (no cpufreq)")
    if os.path.exists("/proc/sys/net/core/rps_sock_flow_entries"):
        settings["/proc/sys/net/core/rps_sock_flow_entries"] = read_file("/proc/sys/net/core/rps_sock_flow_entries")
    qdiscs = {device: [] for device in devices}
    for qdisc in run_json(["tc", "-j", "qdisc", "show"]) or []:
        qdiscs.setdefault(qdisc.get("dev"), []).append(qdisc)
    for device in devices:
        settings[f"qdisc {device}"] = describe_qdiscs(qdiscs[device])
    links = {link.get("ifname"): link for link in run_json(["ip", "-j", "-d", "link", "show"]) or []}
    for device in devices:
        settings[f"xdp {device}"] = describe_xdp(links.get(device, {}))
    have_ethtool = shutil.which("ethtool") is not None
    if not have_ethtool:
        notes.append("ethtool is not installed: channels and offloads read 'unknown: no ethtool'")
    for device in devices:
        settings[f"ethtool -l {device}"] = read_channels(device) if have_ethtool else "unknown: no ethtool"
        if have_ethtool:
            for feature, value in read_offloads(device).items():
                settings[f"ethtool -k {device} {feature}"] = value
    settings["nftables table {} {}".format(*NFT_TABLE)] = "present" if nft_table_exists() else "absent"
    return settings, notes


def net_devices():
    return sorted(name for name in os.listdir("/sys/class/net") if os.path.isdir(f"/sys/class/net/{name}"))


def read_file(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError as exc:
        return f"unreadable: {errno.errorcode.get(exc.errno, exc.errno)}"


def write_file(path, value):
    with open(path, "w") as handle:
        handle.write(value)


def run(argv):
    try:
        # The caller reads the exit status: a failing tool is reported, not raised.
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def run_json(argv):
    result = run(argv)
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout or "null")
    except ValueError:
        return None


def describe_qdiscs(qdiscs):
    """Every qdisc of a device with its options; counters (refcnt) left out, since they move."""
    parts = []
    for qdisc in qdiscs:
        parent = "root" if qdisc.get("root") else "parent " + str(qdisc.get("parent", "?"))
        if qdisc.get("kind") in ("ingress", "clsact"):
            parent = "ingress"
        options = json.dumps(qdisc.get("options", {}), sort_keys=True, separators=(",", ":"))
        parts.append(f"{parent} {qdisc.get('kind')} {qdisc.get('handle')} {options}")
    return "; ".join(sorted(parts)) or "none"


def describe_xdp(link):
    xdp = link.get("xdp") or {}
    attached = xdp.get("attached") or ([xdp] if xdp.get("prog") else [])
    programs = sorted(
        f"{XDP_MODES.get(entry.get('mode'), entry.get('mode'))} prog {entry.get('prog', {}).get('id')}"
        for entry in attached
        if entry.get("prog")
    )
    return ", ".join(programs) or "none"


def read_channels(device):
    result = run(["ethtool", "-l", device])
    if result.returncode != 0:
        return "unsupported"
    current = result.stdout.split("Current hardware settings:")[-1]
    values = dict(re.findall(r"^(RX|TX|Other|Combined):\s*(\S+)", current, re.MULTILINE))
    return " ".join(f"{name.lower()}={values.get(name, '?')}" for name in ("RX", "TX", "Other", "Combined"))


def read_channel_maximums(device):
    result = run(["ethtool", "-l", device])
    section = result.stdout.split("Pre-set maximums:")[-1].split("Current hardware settings:")[0]
    pairs = re.findall(r"^(RX|TX|Other|Combined):\s*(\S+)", section, re.MULTILINE)
    return {name.lower(): value for name, value in pairs}


def read_offloads(device):
    result = run(["ethtool", "-k", device])
    if result.returncode != 0:
        return {}
    features = {}
    for line in result.stdout.splitlines()[1:]:  # the first line is "Features for D:"
        name, separator, value = line.strip().partition(": ")
        if separator:
            features[name] = value.strip()
    return features


def nft_table_exists():
    return shutil.which("nft") is not None and run(["nft", "list", "table", *NFT_TABLE]).returncode == 0


def read_sysctl(key):
    """{"value": what `sysctl -n` prints} or {"error": why it cannot be read}."""
    result = run(["sysctl", "-n", key])
    if result.returncode != 0:
        return {"error": last_line(result.stderr) or last_line(result.stdout) or "no output"}
    return {"value": result.stdout.rstrip("\n")}


def last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- restoring ------------------------------------------------------------------


def restore_sysctls(wanted):
    """Set each sysctl whose words differ from the snapshot's; read each again."""
    result = {}
    for key, value in wanted.items():
        error, written = "", False
        now = read_sysctl(key)
        if "value" not in now or now["value"].split() != value.split():
            attempt = run(["sysctl", "-w", f"{key}={' '.join(value.split())}"])
            written = attempt.returncode == 0
            if not written:
                error = last_line(attempt.stderr) or last_line(attempt.stdout) or "sysctl -w failed"
        after = read_sysctl(key)
        result[key] = {"after": after.get("value"), "error": error or after.get("error", ""), "written": written}
    return result


def apply_sysctls(wanted):
    """provision.sysctls: write each sysctl whose words differ from the value wanted, then
    read every one back, since the kernel may clamp or refuse a value without saying so."""
    result = {"sysctls": {}, "failures": [], "changed": False}
    for key, value in wanted.items():
        before = read_sysctl(key)
        if before.get("value", "").split() != value.split():
            attempt = run(["sysctl", "-w", f"{key}={value}"])
            result["changed"] = result["changed"] or attempt.returncode == 0
            if attempt.returncode != 0:
                why = last_line(attempt.stderr) or last_line(attempt.stdout) or "sysctl -w failed"
                result["failures"].append(f"{key}: cannot write '{value}': {why}")
                continue
        after = read_sysctl(key)
        result["sysctls"][key] = after.get("value")
        if after.get("value", "").split() != value.split():
            result["failures"].append(f"{key} reads '{after.get('value', after.get('error'))}' after writing '{value}'")
    return result


def unpack(given):
    """The run's work folders, and the workload folder's content unpacked into its place."""
    for folder in given["folders"]:
        os.makedirs(folder, mode=0o755, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(given["archive"])), mode="r:gz") as archive:
        # The "data" filter (Python 3.11.4+) refuses absolute paths, links out of `into`
        # and device files; the archive is the harness's own, this is belt and braces.
        if hasattr(tarfile, "data_filter"):
            archive.extractall(given["into"], filter="data")
        else:
            archive.extractall(given["into"])
    return {"changed": True}


def tool_versions(commands):
    """{tool: what its version command printed} for each {tool, argv}; a tool that is not
    installed (or fails) gives empty output, which the harness leaves out."""
    found = {}
    for command in commands:
        done = run(command["argv"])
        found[command["tool"]] = {"stdout": done.stdout, "stderr": done.stderr if done.returncode != 127 else ""}
    return found


def remove_workdir(workdir):
    """Remove the run's workdir (only ever /var/tmp/harness/<run id>); return why not, or ""."""
    if not workdir:
        return ""
    if os.path.dirname(workdir) != "/var/tmp/harness" or os.path.basename(workdir) in ("", ".", ".."):
        return f"refusing to remove {workdir}"
    try:
        shutil.rmtree(workdir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror or exc}"
    return ""


def restore(before):
    now, _ = read_settings()
    actions, failures = [], {}
    # Channels first: more channels bring back queues (rx-1, ...) whose files come next.
    channels = {
        key: wanted
        for key, wanted in before.items()
        if key.startswith("ethtool -l ") and now.get(key) not in (None, wanted)
    }
    for key, wanted in sorted(channels.items()):
        try:
            actions.append(set_channels(key.split(" ", 2)[2], wanted))
        except RestoreFailed as exc:
            failures[key] = str(exc)
    if channels:
        now, _ = read_settings()
    offloads = {}
    for key, wanted in sorted(before.items()):
        current = now.get(key)
        if current is None or current == wanted or key in channels:
            continue  # the same, or the device/IRQ is gone: nothing to put back
        try:
            if key.startswith("/"):
                if wanted.startswith("unreadable:"):
                    raise RestoreFailed(f"it was {wanted}")
                write_file(key, wanted)
                actions.append(f"wrote {wanted} to {key}")
            elif key.startswith("qdisc "):
                actions += restore_qdiscs(key.split(" ", 1)[1], wanted, current)
            elif key.startswith("xdp "):
                actions += detach_xdp(key.split(" ", 1)[1], wanted, current)
            elif key.startswith("ethtool -k "):
                device, feature = key.split(" ", 3)[2:]
                if "[fixed]" in wanted or "[fixed]" in current:
                    raise RestoreFailed("the device fixes this feature")
                offloads.setdefault(device, []).extend([feature, wanted.split()[0]])
            elif key.startswith("nftables table "):
                if wanted != "absent":
                    raise RestoreFailed("the table was there before the run and has been removed or changed")
                check(["nft", "delete", "table", *NFT_TABLE])
                actions.append("deleted nftables table {} {}".format(*NFT_TABLE))
            else:
                raise RestoreFailed("the harness does not know how to put this back")
        except RestoreFailed as exc:
            failures[key] = str(exc)
        except OSError as exc:
            failures[key] = f"writing it failed: {exc.strerror or exc}"
    for device, words in offloads.items():
        try:
            check(["ethtool", "-K", device, *words])
            actions.append(f"ethtool -K {device} {' '.join(words)}")
        except RestoreFailed as exc:
            for feature in words[::2]:
                failures[f"ethtool -k {device} {feature}"] = str(exc)
    after, _ = read_settings()
    return {"settings": after, "actions": actions, "failures": failures}


class RestoreFailed(Exception):
    pass


def check(argv):
    result = run(argv)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {result.returncode}"
        raise RestoreFailed(f"`{' '.join(argv)}` failed: {why}")


def restore_qdiscs(device, wanted, current):
    """Remove qdiscs the run added, where the kernel's default was there before."""
    actions = []
    parts_before = set(wanted.split("; "))
    root_before = [part for part in parts_before if part.startswith("root ")]
    root_now = [part for part in current.split("; ") if part.startswith("root ")]
    if root_now and root_now != root_before:
        if root_before and root_before[0].split()[2] != DEFAULT_QDISC_HANDLE:
            raise RestoreFailed("the root qdisc was set before the run (not the kernel's default) and has changed")
        check(["tc", "qdisc", "del", "dev", device, "root"])
        actions.append(f"tc qdisc del dev {device} root")
    ingress_before = any(part.startswith("ingress ") for part in parts_before)
    for part in current.split("; "):
        if part.startswith("ingress ") and not ingress_before:
            kind = part.split()[1]
            check(["tc", "qdisc", "del", "dev", device, kind])
            actions.append(f"tc qdisc del dev {device} {kind}")
    return actions


def detach_xdp(device, wanted, current):
    if wanted != "none":
        raise RestoreFailed("an XDP program was attached before the run and has been replaced or detached")
    actions = []
    for program in current.split(", "):
        mode = program.split()[0]
        check(["ip", "link", "set", "dev", device, mode, "off"])
        actions.append(f"ip link set dev {device} {mode} off")
    return actions


def set_channels(device, wanted):
    if wanted in ("unsupported", "unknown: no ethtool"):
        raise RestoreFailed(f"channels were {wanted} before")
    argv = ["ethtool", "-L", device]
    for pair in wanted.split():
        name, _, value = pair.partition("=")
        if value.isdigit():
            argv += [name, value]
    check(argv)
    return " ".join(argv)


# --- tuning the service device ---------------------------------------------------


def tune(address, net):
    """Apply provision.net to the device holding `address`; read every value back."""
    device = device_of(address)
    if device is None:
        raise SystemExit(f"no network device of this host holds the service address {address}")
    if device == "lo":
        return {
            "skipped": f"the service address {address} is on lo: provision.net is not applied to loopback",
            "changed": False,
        }
    failures, wrote, before = {}, {}, {}

    def put(path, value):
        before[path] = read_file(path)
        try:
            write_file(path, value)
            wrote[path] = value
        except OSError as exc:
            failures[path] = f"writing {value} failed: {exc.strerror or exc}"

    # Channels first: they decide which queues (rx-N, tx-N) exist to be steered.
    if net.get("channels") is not None:
        key = f"ethtool -l {device}"
        if shutil.which("ethtool") is None:
            failures[key] = "ethtool is not installed"
        else:
            maximums = read_channel_maximums(device)
            before[key] = read_channels(device)
            names = ["combined"] if maximums.get("combined", "n/a").isdigit() else ["rx", "tx"]
            argv = ["ethtool", "-L", device]
            for name in names:
                argv += [name, str(net["channels"])]
            try:
                check(argv)
            except RestoreFailed as exc:
                failures[key] = f"{exc} (maximums: {', '.join(f'{k}={v}' for k, v in sorted(maximums.items()))})"
            channels = dict(pair.partition("=")[::2] for pair in read_channels(device).split())
            if key not in failures and any(channels.get(name) != str(net["channels"]) for name in names):
                failures[key] = (
                    f"reads '{read_channels(device)}' after setting {' and '.join(names)} to {net['channels']}"
                )
    queues = f"/sys/class/net/{device}/queues"
    for field, pattern in (
        ("rps_cpus", "rx-*/rps_cpus"),
        ("rps_flow_cnt", "rx-*/rps_flow_cnt"),
        ("xps_cpus", "tx-*/xps_cpus"),
    ):
        if net.get(field) is not None:
            paths = sorted(glob.glob(f"{queues}/{pattern}"))
            if not paths:
                failures[f"{queues}/{pattern}"] = f"{device} has no such file: cannot set {field}"
            for path in paths:
                put(path, str(net[field]))
    if net.get("rps_sock_flow_entries") is not None:
        path = "/proc/sys/net/core/rps_sock_flow_entries"
        if os.path.exists(path):
            put(path, str(net["rps_sock_flow_entries"]))
        else:
            failures[path] = (
                "absent: net.core.rps_sock_flow_entries exists only in the initial network "
                "namespace; set it on the machine that holds this host"
            )
    irq_cpus = net.get("irq_cpus")
    if net.get("irq_node") is not None:  # the CPUs of a NUMA node, as this host numbers them
        node_cpus = f"/sys/devices/system/node/node{net['irq_node']}/cpulist"
        if os.path.exists(node_cpus):
            irq_cpus = read_file(node_cpus)
        else:
            failures[node_cpus] = f"this host has no NUMA node {net['irq_node']}: cannot set irq_node"
    if irq_cpus is not None:
        irqs = device_irqs(device)
        if not irqs:
            failures[f"irqs of {device}"] = f"{device} has no IRQs of its own (a virtual device?): cannot set irq_cpus"
        for irq in irqs:
            put(f"/proc/irq/{irq}/smp_affinity_list", str(irq_cpus))
    for path, value in wrote.items():
        now = read_file(path)
        if not same_value(path, value, now):
            hint = " (the kernel rounds it up to a power of two)" if path.endswith(("flow_cnt", "flow_entries")) else ""
            failures[path] = f"reads {now} after writing {value}{hint}"
    changed = any(not same_value(path, value, before[path]) for path, value in wrote.items())
    channels_key = f"ethtool -l {device}"
    if channels_key in before and read_channels(device) != before[channels_key]:
        changed = True
    return {"device": device, "failures": failures, "changed": changed}


def same_value(path, written, read):
    if path.endswith("_cpus"):  # hex CPU masks: "3" reads back as "3" or "00000003" or "00000000,00000003"
        return int(written.replace(",", ""), 16) == int(read.replace(",", ""), 16) if is_hex(read) else False
    if path.endswith("smp_affinity_list"):
        return cpu_set(written) == cpu_set(read)
    return written.split() == read.split()


def is_hex(text):
    return re.fullmatch(r"[0-9a-fA-F,]+", text) is not None


def cpu_set(text):
    cpus = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        if low.isdigit():
            cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def describe_nic(address):
    """The device holding the service address, its driver and speed: "eth0 (virtio_net, 10000 Mb/s)"."""
    device = device_of(address) if address else None
    if device is None:
        return None
    driver_link = f"/sys/class/net/{device}/device/driver"
    if os.path.exists(driver_link):
        driver = os.path.basename(os.path.realpath(driver_link))
    else:  # virtual devices (lo, veth, bridge) have no bus device; their kind says what they are
        kinds = [
            ((link.get("linkinfo") or {}).get("info_kind"))
            for link in run_json(["ip", "-j", "-d", "link", "show", "dev", device]) or []
        ]
        driver = next((kind for kind in kinds if kind), "virtual" if device != "lo" else "loopback")
    speed = read_file(f"/sys/class/net/{device}/speed")
    speed_text = f", {speed} Mb/s" if speed.lstrip("-").isdigit() and int(speed) > 0 else ""
    return f"{device} ({driver}{speed_text})"


def device_of(address):
    try:
        wanted = {info[4][0] for info in socket.getaddrinfo(address, None)}
    except socket.gaierror:
        return None
    for link in run_json(["ip", "-j", "addr", "show"]) or []:
        for entry in link.get("addr_info", []):
            if entry.get("local") in wanted:
                return link.get("ifname")
    return None


def device_irqs(device):
    """The IRQs of a device: its MSI vectors, or /proc/interrupts lines named after it or its bus device."""
    irqs = set()
    device_dir = (
        os.path.realpath(f"/sys/class/net/{device}/device")
        if os.path.exists(f"/sys/class/net/{device}/device")
        else None
    )
    names = {device}
    if device_dir:
        names.add(os.path.basename(device_dir))  # virtio2 for a virtio NIC
        for directory in (device_dir, os.path.dirname(device_dir)):
            if os.path.isdir(f"{directory}/msi_irqs"):
                irqs.update(int(name) for name in os.listdir(f"{directory}/msi_irqs") if name.isdigit())
    with open("/proc/interrupts") as handle:
        for line in handle:
            fields = line.split()
            if (
                fields
                and fields[0].rstrip(":").isdigit()
                and fields[-1]
                and any(re.match(rf"^{re.escape(name)}([-_:.@]|$)", fields[-1]) for name in names)
            ):
                irqs.add(int(fields[0].rstrip(":")))
    return sorted(irq for irq in irqs if os.path.exists(f"/proc/irq/{irq}/smp_affinity_list"))


if __name__ == "__main__":
    main()
