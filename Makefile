# The two commands a newcomer needs: `make run` and `make test`. Both set up what they need first,
# once per invocation; a re-run with nothing changed spends milliseconds on it (scripts/setup.sh).
.PHONY: setup setup-dev setup-test run test test-fast test-slow lint bench clean

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180

# What running needs: .venv with the runtime lock. No Debian package, no sudo.
setup:
	@scripts/setup.sh run

# + linters, type checker and test tools (the dev lock).
setup-dev:
	@scripts/setup.sh dev

# + the Debian packages the tests need (openssh-server, docker.io, docker-registry, debootstrap,
# chromium).
setup-test:
	@scripts/setup.sh test

# Train on the bundled sample data with Prefect's ephemeral server, publish to ./artifacts.
run: setup
	.venv/bin/kubetrain train

define LINT
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
endef

lint: setup-dev
	$(LINT)

# The whole suite: lint, types, unit and integration tests (real sshd, real Prefect server),
# and the container test (a real Docker engine started by the test).
test: setup-test
	$(LINT)
	KUBETRAIN_REQUIRE_ALL=1 .venv/bin/python -m pytest -m "not slow"

test-fast: setup-test
	.venv/bin/python -m pytest -m "not slow and not container"

test-slow: setup-test
	.venv/bin/python -m pytest -m slow

bench: setup-test
	.venv/bin/python -m benchmarks.train_speed
	.venv/bin/python -m benchmarks.train_scaling
	.venv/bin/python -m benchmarks.sftp_throughput
	.venv/bin/python -m benchmarks.predict_stream

clean:
	rm -rf artifacts .pytest_cache .mypy_cache .ruff_cache

# Mutation testing of the core modules against their fast tests (mutmut, configured in
# pyproject.toml; results kept in mutants/). Prints the score per module and the survivors.
.PHONY: mutation
mutation: setup-dev
	.venv/bin/python -m tests.mutation.run --fail-under 90
