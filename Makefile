SHELL := /bin/bash
.PHONY: up test bench lint
up:        ## run the whole mesh on the embedded default
	scripts/up
test:      ## every check and test (what CI runs)
	scripts/test
bench:     ## the mesh vs the simulator directly, same run
	. scripts/_venv.sh "" && lockgate bench
lint:
	. scripts/_venv.sh "dev" && ruff check . && ruff format --check . && mypy
