# Entry points of the README. `make demo` runs the main job end to end on the
# embedded default images; `make test` installs and runs the test suite.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
CONFIG ?= small_dense
DATA_DIR ?= tfrecords/$(CONFIG)

.PHONY: install demo data test test-fast bench

install:
	$(PIP) install -q -e ".[cpu,test]"

data: install
	$(PYTHON) tools/make_tfrecords.py --flagfile=configs/$(CONFIG).flags --out_dir=$(DATA_DIR)

demo: data

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: install
	$(PYTHON) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

test-fast: PYTEST_ARGS = -m "not slow"
test-fast: test

bench: install
	$(PYTHON) benchmarks/bench_data.py
