"""Link properties of lab hosts without a lab: the values LinkProperties accepts, how an old
lab.json reads, the TBF burst, and the one-line errors of `harness lab up` for bad flags
(which build nothing). tests/integration/test_lab_links.py applies them to real labs."""

import os

import pytest

from harness.hosts import lab as lab_module
from harness.hosts.lab import LinkProperties, LinkPropertyError
from harness.hosts.lab import links as lab_links
from harness.hosts.lab import state as lab_state
from tests.builders import run_harness

PID = os.getpid()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("queues", 0, "queues: must be a whole number from 1 to 64, not 0"),
        ("mtu", 9000.0, "mtu: must be a whole number of bytes from 68 to 65535, not 9000.0"),
        ("rate_mbit", 0, "rate_mbit: must be more than 0 and at most 100000 Mbit/s, not 0"),
        ("loss_percent", 100.5, "loss_percent: must be from 0 to 100 %, not 100.5"),
        (
            "loss_percent",
            0.005,
            "loss_percent: 0.005 is finer than 0.01 % (nftables draws from 10000 values): round it",
        ),
        ("delay_ms", -1, "delay_ms: must be from 0 to 60000 ms, not -1"),
        ("delay_ms", "5ms", "delay_ms: must be a number of ms, not '5ms'"),
    ],
)
def test_link_properties_reject_values_out_of_range(field, value, message):
    with pytest.raises(LinkPropertyError) as caught:
        LinkProperties(**{field: value})
    assert (caught.value.field, str(caught.value)) == (field, message)
    assert isinstance(caught.value, ValueError)


def test_a_format_1_lab_json_reads_as_a_link_with_queues_only():
    state = {
        "format": 1,
        "name": "old",
        "subnet": "198.18.1.0/24",
        "bridge": "old-br",
        "bridge_address": "198.18.1.1",
        "queues": 4,
        "hosts": [],
        "files": {
            "directory": "/x/old",
            "client_key": "/x/old/k",
            "known_hosts": "/x/old/kh",
            "inventory": "/x/old/inventory.ini",
        },
    }
    lab = lab_state.lab_from_state(state)
    assert (lab.link, lab.link_mechanisms, lab.queues) == (LinkProperties(queues=4), lab_module.LinkMechanisms(), 4)


def test_zero_loss_and_delay_mean_off_and_the_burst_holds_ten_frames():
    assert LinkProperties(loss_percent=0, delay_ms=0.0) == LinkProperties()
    assert LinkProperties(loss_percent=12.34).loss_threshold == 1234
    assert lab_links.tbf_burst(LinkProperties(rate_mbit=50, mtu=9000)) == 10 * 9014
    assert lab_links.tbf_burst(LinkProperties(rate_mbit=1000)) == 500_000  # 4 ms at 1 Gbit/s


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--rate", "50mbps", "Invalid value for '--rate': '50mbps': give a number and one of kbit, mbit, gbit"),
        ("--rate", "0gbit", "Invalid value for '--rate': must be more than 0 and at most 100000 Mbit/s, not 0"),
        ("--loss", "lots", "Invalid value for '--loss': 'lots': give a percentage such as 1 or 0.5%"),
        ("--loss", "0.001%", "Invalid value for '--loss': 0.001 is finer than 0.01 %"),
        ("--delay", "5", "Invalid value for '--delay': '5': give a number and one of us, ms, s (e.g. 5ms)"),
        ("--mtu", "20", "Invalid value for '--mtu': 20 is not in the range 68<=x<=65535."),
    ],
)
def test_lab_up_names_the_flag_at_fault(flag, value, message, tmp_path):
    result = run_harness("lab", "up", "--name", f"x{PID}", "--base-dir", tmp_path, flag, value)
    assert (result.returncode, result.stdout) == (2, "")
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was built
