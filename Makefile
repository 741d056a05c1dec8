# The two commands of the README. Everything else is detail.
.PHONY: demo test test-loaded check lint typecheck

demo:
	./scripts/bootstrap.sh
	.venv/bin/nurserywatch demo

test:
	./scripts/bootstrap.sh --test
	.venv/bin/python -m pytest -q -ra --durations=15
	.venv/bin/mypy
	.venv/bin/ruff check .

# The same pytest run with both cores kept busy by stress-ng beside it (stopped afterwards): a test
# that passes only on an idle machine has found a race. Installs stress-ng; `make test` does not.
# A subset: make test-loaded PYTEST_ARGS="tests/gateway tests/e2e/test_chaos.py"
test-loaded:
	./scripts/bootstrap.sh --loaded
	./scripts/with_load.sh .venv/bin/python -m pytest -q -ra $(PYTEST_ARGS)
