"""Node steps for a kubeadm cluster over SSH.

errors.py (InventoryError, ClusterStepError, ClusterRunError), spec.py and inventory.py (the
YAML file, validated once), versions.py (supported releases), steps.py (step records:
check-then-apply, fetch, wait), join.py (the join command), plans.py and teardown.py (the step
catalogues), render.py (plans as text), runner.py (running steps, the report), remote.py (the
SSH adapter).
"""

from kubetrain.cluster.errors import ClusterRunError, ClusterStepError, InventoryError
from kubetrain.cluster.inventory import Host, Inventory, load_inventory, parse_inventory
from kubetrain.cluster.join import JOIN_TOKEN_COMMAND, JoinCommand, parse_join_command
from kubetrain.cluster.plans import (
    KEYRING,
    control_plane_check,
    control_plane_steps,
    join_steps,
    nodes_ready_step,
    prepare_steps,
)
from kubetrain.cluster.remote import create_join_command, execute_host, open_remote
from kubetrain.cluster.render import full_plan, render_full_plan, render_plan
from kubetrain.cluster.runner import ClusterReport, StepResult, parse_ready, run_steps
from kubetrain.cluster.spec import DEFAULT_PACKAGE_REPOSITORY, InventorySpec, WaitSpec
from kubetrain.cluster.steps import AnyStep, Command, FetchStep, Step, WaitStep
from kubetrain.cluster.teardown import network_cleanup_steps, teardown_steps

__all__ = [
    "DEFAULT_PACKAGE_REPOSITORY",
    "JOIN_TOKEN_COMMAND",
    "KEYRING",
    "AnyStep",
    "ClusterReport",
    "ClusterRunError",
    "ClusterStepError",
    "Command",
    "FetchStep",
    "Host",
    "Inventory",
    "InventoryError",
    "InventorySpec",
    "JoinCommand",
    "Step",
    "StepResult",
    "WaitSpec",
    "WaitStep",
    "control_plane_check",
    "control_plane_steps",
    "create_join_command",
    "execute_host",
    "full_plan",
    "join_steps",
    "load_inventory",
    "network_cleanup_steps",
    "nodes_ready_step",
    "open_remote",
    "parse_inventory",
    "parse_join_command",
    "parse_ready",
    "prepare_steps",
    "render_full_plan",
    "render_plan",
    "run_steps",
    "teardown_steps",
]
