"""Errors a user can cause or fix. The CLI prints them as one line and exits 1.

Every message names what is at fault (a file and line, a field, a host, a step)
and, where it helps, what to do next. Library code raises; only cli.py prints.
"""


class HarnessError(Exception):
    """A problem the user can fix: bad input, a missing host, a busy port."""


class SpecError(HarnessError):
    """An experiment file that cannot be read or does not fit the schema."""


class InventoryError(HarnessError):
    """An inventory that cannot be read, or lacks a host a role needs."""


class HostError(HarnessError):
    """A host that cannot be reached or that lacks something the run needs."""


class ProvisionError(HarnessError):
    """An Ansible playbook that failed on some host."""


class TrialError(HarnessError):
    """A trial that could not complete: a server crashed, a load generator failed."""


class Interrupted(HarnessError):
    """SIGINT or SIGTERM arrived; the run stops, restores hosts and keeps its results."""


class LabError(HarnessError):
    """A lab of network-namespace hosts that could not be created, checked or removed."""
