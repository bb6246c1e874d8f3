"""kubetrain: train scikit-learn models as Prefect flows and publish them, versioned and verified.

This package is the library under the Prefect layer: everything that is not a flow or a task,
grouped by concern (store, ssh, data, training, cluster, k8s). See docs/design.md.
"""
