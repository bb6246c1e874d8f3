"""The model registry, built on the artifact store itself: no server beyond the store.

- `catalog`: list, show and diff versions.
- `aliases`: named pointers (production, staging) moved atomically, with an append-only history.
- `gate`: promote a new version only if it is not worse than the one an alias names.
- `prune`: retention that never deletes a protected version nor leaves a half-deleted one visible.
- `signing`: Ed25519 signatures over the manifest, checked before any model file is loaded.

Layout below `<root>/<experiment>/` (README "Versions"): `aliases/<name>` (JSON naming a version
and the history event that moved it there) and `aliases/history/<time>-<random>.json`, one file
per move.
"""
