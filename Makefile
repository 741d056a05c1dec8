# The two commands of the README. Everything else is detail.
.PHONY: demo test check lint typecheck

demo:
	./scripts/bootstrap.sh
	.venv/bin/nurserywatch demo

test:
	./scripts/bootstrap.sh --test
	.venv/bin/python -m pytest -q -ra
	.venv/bin/mypy
	.venv/bin/ruff check .
