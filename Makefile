# The two commands a newcomer needs: `make run` and `make test`. Both set everything up first.
.PHONY: setup run test test-fast test-slow lint bench clean

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180

setup:
	@scripts/setup.sh

# Train on the bundled sample data with Prefect's ephemeral server, publish to ./artifacts.
run: setup
	.venv/bin/python -m flows.train

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# The whole suite: lint, types, unit and integration tests (real sshd, real Prefect server),
# and the container test (a real Docker engine started by the test).
test: setup
	KUBETRAIN_SETUP_CONTAINER=1 scripts/setup.sh
	$(MAKE) --no-print-directory lint
	KUBETRAIN_REQUIRE_ALL=1 .venv/bin/python -m pytest -m "not slow"

test-fast: setup
	.venv/bin/python -m pytest -m "not slow and not container"

test-slow: setup
	.venv/bin/python -m pytest -m slow

bench: setup
	.venv/bin/python -m benchmarks.train_speed
	.venv/bin/python -m benchmarks.train_scaling
	.venv/bin/python -m benchmarks.sftp_throughput

clean:
	rm -rf artifacts .pytest_cache .mypy_cache .ruff_cache

# Mutation testing of the core modules against their fast tests (mutmut, configured in
# pyproject.toml; results kept in mutants/). Prints the score per module and the survivors.
.PHONY: mutation
mutation: setup
	.venv/bin/python -m tests.mutation.run --fail-under 90
