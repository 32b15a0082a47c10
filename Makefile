# memx — `make` builds the library and runs the demo; `make test` runs every
# test (what .ci/run calls); `make bench` compares allocators.

LIB    := $(CURDIR)/target/release/libmemx.so
# The real interpreter, not a pyenv shim script, so LD_PRELOAD reaches it.
PYTHON := $(shell python3 -c 'import sys; print(sys.executable)')

.PHONY: all build demo test lint unit cdylib-tests profile-tests service-tests real-programs cli-tests wheel wheel-tests soak bench callgrind clean

all: build demo

# The library and the `memx` command (target/release/libmemx.so, target/release/memx).
build:
	cargo build --release --workspace

# The allocator under a Python workload (its malloc_stats report), then the
# heap profiler on a script that leaks: what grew between two of its dumps.
demo: build
	LD_PRELOAD=$(LIB) MEMX_STATS_AT_EXIT=1 $(PYTHON) scripts/demo.py
	@echo "--- heap profiling: memx run on scripts/cli-example.py (a cache that is never trimmed)"
	rm -rf target/demo
	target/release/memx run --profile target/demo/app -- $(PYTHON) scripts/cli-example.py
	target/release/memx diff target/demo/app.*.0001.heap target/demo/app.*.0003.heap --python --by line --top 5

test: lint unit build cdylib-tests profile-tests service-tests real-programs cli-tests wheel-tests

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --lib

cdylib-tests: build
	scripts/cdylib-tests.sh $(LIB)

# The heap profiler on real programs: accuracy (also through google-pprof),
# signal, interval and exit dumps, fork, threads, Python.
profile-tests: build
	scripts/profile-tests.py $(LIB)

# Profiling services: launchers that drop privileges, setproctitle, signals
# taken over, CPython's fork warning; memx snapshot of PostgreSQL, nginx and
# Redis started on random ports (needs root; skips what is not installed).
service-tests: build
	scripts/service-tests.py $(LIB)

real-programs: build
	scripts/real-programs.sh $(LIB)

# The `memx` command on dumps of C/C++ programs it builds (cli/tests/).
cli-tests: build
	cargo test --release -p memx-cli

# The Python package: one py3-none wheel with libmemx.so and the memx
# command (pyproject.toml; maturin builds it, auditwheel checks its tag).
# The build tools live in a venv of their own under target/.
TOOLS := $(CURDIR)/target/wheel-tools
WHEEL  = $(firstword $(wildcard target/wheels/memx-$(VERSION)-py3-none-*.whl))
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' cli/Cargo.toml)

$(TOOLS)/bin/maturin:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q 'maturin>=1.5,<2' auditwheel

# Its own target dir: the feature `wheel` would otherwise make the next
# `cargo build --workspace` rebuild the memx command.
wheel: $(TOOLS)/bin/maturin
	rm -f target/wheels/memx-$(VERSION)-*.whl
	$(TOOLS)/bin/maturin build --release --out target/wheels --target-dir target/wheel-build

# The wheel installed into venvs of two CPython versions, its API, and a
# Jupyter kernel under memx (jupyter_client and ipykernel from PyPI).
wheel-tests: wheel
	$(PYTHON) scripts/wheel-tests.py $(WHEEL) $(TOOLS)

# Minutes (SOAK_SECONDS, default 300); not part of `make test`, which runs
# the same programs for seconds as cdylib tests.
soak: build
	scripts/soak.sh $(LIB)

bench:
	scripts/bench.sh

# Only the heap profiler's overhead section of BENCHMARKS.md (part of `make bench`).
.PHONY: bench-profiler
bench-profiler:
	scripts/bench.sh --profiler-only

clean:
	cargo clean
