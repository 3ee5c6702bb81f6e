"""The workload folder travels to each host as one packed archive (harness/hosts/provision.py)
and is unpacked there by playbooks/files/host_state.py: content, modes and links as a copy
would leave them."""

import importlib.util
import os
import stat

from harness.hosts.provision import _packed
from tests.builders import ROOT


def host_state():
    spec = importlib.util.spec_from_file_location("host_state", ROOT / "playbooks" / "files" / "host_state.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_workload_arrives_whole_with_its_modes_and_links_followed(tmp_path):
    source = tmp_path / "workload"
    (source / "sub").mkdir(parents=True)
    (source / "server.c").write_text("int main(void) { return 0; }\n")
    (source / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(source / "sub" / "run.sh", 0o755)
    outside = tmp_path / "shared.txt"
    outside.write_text("shared between experiments\n")
    (source / "shared.txt").symlink_to(outside)

    workdir = tmp_path / "host" / "run-1"
    folders = [str(workdir / name) for name in ("workload", "bin", "data")]
    result = host_state().unpack({"archive": _packed(source), "into": folders[0], "folders": folders})

    assert result == {"changed": True}
    assert all(os.path.isdir(folder) for folder in folders)
    unpacked = workdir / "workload"
    assert (unpacked / "server.c").read_text() == "int main(void) { return 0; }\n"
    assert stat.S_IMODE((unpacked / "sub" / "run.sh").stat().st_mode) == 0o755
    # A link into the catalog arrives as the file it points to, as the copy module left it.
    assert not (unpacked / "shared.txt").is_symlink()
    assert (unpacked / "shared.txt").read_text() == "shared between experiments\n"
    assert sorted(path.name for path in unpacked.rglob("*")) == ["run.sh", "server.c", "shared.txt", "sub"]
