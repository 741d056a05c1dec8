# The two commands of the README. Everything else is detail.
.PHONY: demo test test-loaded check lint typecheck

demo:
	./scripts/bootstrap.sh
	.venv/bin/nurserywatch demo

# Most tests run on two workers (they mostly wait on real processes and real time: a sequential run
# keeps the CPU ~35 % busy); the real-time end-to-end scenarios (marker e2e: a whole nap, chaos, the
# demos) run after them, one at a time, so that their timing is the product's and not a neighbour's.
test:
	./scripts/bootstrap.sh --test
	.venv/bin/python -m pytest -q -ra --durations=15 -n 2 -m "not e2e"
	.venv/bin/python -m pytest -q -ra --durations=5 -m e2e
	.venv/bin/mypy
	.venv/bin/ruff check .

# The same pytest run with both cores kept busy by stress-ng beside it (stopped afterwards): a test
# that passes only on an idle machine has found a race. Installs stress-ng; `make test` does not.
# A subset: make test-loaded PYTEST_ARGS="tests/gateway tests/e2e/test_chaos.py"
test-loaded:
	./scripts/bootstrap.sh --loaded
	./scripts/with_load.sh .venv/bin/python -m pytest -q -ra $(PYTEST_ARGS)
