"""The Kubernetes side of kubetrain, by concern.

- `template`: the work pool's base job template (derive, load, environments, job variables).
- `render`: offline rendering of the exact Job the prefect-kubernetes worker submits.
- `validate`: strict Kubernetes schema checks of rendered Jobs and manifests.
- `pool`: the work pool on the Prefect API (create or update).
- `manifests`: infra/kubernetes and the SFTP Secret, server-side applied to a cluster.
"""

from kubetrain.k8s.manifests import apply_manifests, load_manifests, sftp_secret_manifest
from kubetrain.k8s.pool import upsert_work_pool
from kubetrain.k8s.render import render_job_manifest, sample_flow_run_objects
from kubetrain.k8s.template import (
    ENVIRONMENTS_DIR,
    INFRA_DIR,
    KNOWN_HOSTS_FILE,
    KUBERNETES_VERSION,
    POOL_NAME,
    PREFECT_HOME_IN_POD,
    REPO_ROOT,
    RUN_AS_ID,
    SSH_KEY_FILE,
    SSH_MOUNT_DIR,
    TEMPLATE_PATH,
    WorkPoolError,
    check_image,
    check_job_variables,
    derive_base_job_template,
    load_base_job_template,
    load_environment,
    pool_template,
    template_for_environment,
)
from kubetrain.k8s.validate import schema_errors, validate_template

__all__ = [
    "ENVIRONMENTS_DIR",
    "INFRA_DIR",
    "KNOWN_HOSTS_FILE",
    "KUBERNETES_VERSION",
    "POOL_NAME",
    "PREFECT_HOME_IN_POD",
    "REPO_ROOT",
    "RUN_AS_ID",
    "SSH_KEY_FILE",
    "SSH_MOUNT_DIR",
    "TEMPLATE_PATH",
    "WorkPoolError",
    "apply_manifests",
    "check_image",
    "check_job_variables",
    "derive_base_job_template",
    "load_base_job_template",
    "load_environment",
    "load_manifests",
    "pool_template",
    "render_job_manifest",
    "sample_flow_run_objects",
    "schema_errors",
    "sftp_secret_manifest",
    "template_for_environment",
    "upsert_work_pool",
    "validate_template",
]
