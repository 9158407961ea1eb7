# Entry points of the README. `make demo` runs the main job end to end on the
# embedded default images; `make test` installs and runs the test suite.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
CONFIG ?= small_dense
DATA_DIR ?= tfrecords/$(CONFIG)

# The cross-domain test (phase-only tissue) is off by default to keep the
# demo under 30 minutes on slower CPUs: make demo TRANSFER_IMAGES=DIR.
TRANSFER_IMAGES ?=
# Photographs the demo's test scans are simulated from (never trained on).
TEST_IMAGES ?= ../shared/data/imagenet-sample-gray/images

.PHONY: install demo data train export tensorboard test test-fast test-release bench siemens-star prior bench-prior

install:
	$(PIP) install -q -e ".[cpu,test,beam]"

data: install
	$(PYTHON) tools/make_tfrecords.py --flagfile=configs/$(CONFIG).flags --out_dir=$(DATA_DIR)

# The main job: CPU-sized dense and sparse experiments from the embedded
# default images (data -> train -> export -> evaluate -> reports/<name>/report.md),
# evaluated on test scans simulated from the photographs in $(TEST_IMAGES)
# when that folder exists, plus the cross-domain test when $(TRANSFER_IMAGES)
# exists. Every step resumes.
demo: install
	$(PYTHON) -m ptychonet_tf.demo --test_images=$(TEST_IMAGES) --transfer_images=$(TRANSFER_IMAGES)

# One experiment by hand: make train CONFIG=small_sparse
train: data
	$(PYTHON) -m ptychonet_tf.train --flagfile=configs/$(CONFIG).flags --data_dir=$(DATA_DIR) --model_dir=runs/$(CONFIG) --export_dir=saved_models/$(CONFIG)

export:
	$(PYTHON) -m ptychonet_tf.export --model_dir=runs/$(CONFIG) --export_dir=saved_models/$(CONFIG)

tensorboard:
	tensorboard --logdir=runs

# The learned image prior shipped in ptychonet_tf/prior/weights/, trained
# only on redistributable images (embedded defaults and procedural ones): a
# white-noise denoiser (about an hour on 2 cores), then three fine-tunings on
# the error plug-and-play leaves on the embedded/procedural scans of
# tfrecords/small_dense at 1e4 photons (pairs: about 8 minutes each, the
# fine-tunings about 12). Each training resumes when re-run; docs/prior.md.
PAIRS = $(PYTHON) -m ptychonet_tf.make_prior_pairs --data_dir=tfrecords/small_dense --scans=128 --batch=16
prior: install
	test -f tfrecords/small_dense/dataset.json || $(MAKE) data CONFIG=small_dense
	$(PYTHON) -m ptychonet_tf.train_prior --flagfile=configs/prior_base.flags
	cp runs/prior/export/prior.json runs/prior/export/prior.npz ptychonet_tf/prior/weights_base/
	$(PAIRS) --first_scan=0 --seed=1 --domain=complex --prior=runs/prior/export --out=runs/prior_pairs/pairs.npz
	$(PYTHON) -m ptychonet_tf.train_prior --flagfile=configs/prior_pnp.flags
	$(PAIRS) --first_scan=128 --seed=2 --domain=complex --prior=runs/prior_pnp/export --out=runs/prior_pairs/pairs2.npz
	$(PYTHON) -m ptychonet_tf.train_prior --flagfile=configs/prior_pnp2.flags
	$(PAIRS) --first_scan=256 --seed=3 --domain=amplitude_phase --prior=runs/prior_pnp2/export --out=runs/prior_pairs/pairs_ap.npz
	$(PYTHON) -m ptychonet_tf.train_prior --flagfile=configs/prior.flags

# Its denoising PSNR on held-out photos next to a Gaussian filter and BM3D.
bench-prior: install
	$(PIP) install -q -e ".[bench]"
	$(PYTHON) benchmarks/bench_prior.py --images=$(TEST_IMAGES)

# Two tiers: `make test-fast` runs the in-process unit tests (tiny shapes,
# under a minute); `make test` adds the end-to-end tests marked slow
# (subprocesses, training, SIGKILL, multi-worker, CLI runs, and unit tests of
# more than about 3.5 s). Test files are
# spread over the cores with pytest-xdist (one file per worker, so module
# fixtures are built once); TEST_JOBS=0 runs in one process.
# pytest exits 5 when it collects no test; that is not a failure of the suite.
# The 15 slowest tests are listed at the end, to keep the tiers in budget
# (make test under 7 minutes on the CI machine, make test-fast under 90 s).
TEST_JOBS ?= auto
PYTEST_ARGS ?= -m "not release"
test: install
	$(PYTHON) -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=15 $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

test-fast: PYTEST_ARGS = -m "not slow and not release"
test-fast: test

# Everything, for release checks: also the tests marked release (command-line
# rows of tests/test_bad_inputs.py whose in-process rows make test runs, the
# kill and full-disk tests through Beam's runner, the peers benchmark's tiny
# run, the Poisson row of the refinement's physics-loss training), the
# reader fuzz test at 2000 examples, and every
# command line in a fresh interpreter (make test forks them from one process
# that has imported TensorFlow: tests/zygote.py).
test-release: PYTEST_ARGS = -m ""
test-release: export PTYCHONET_FUZZ_EXAMPLES = 2000
test-release: export PTYCHONET_TEST_FRESH = 1
test-release: test

bench: install
	$(PYTHON) benchmarks/bench_data.py
	$(PYTHON) benchmarks/bench_baselines.py
	$(PYTHON) benchmarks/bench_train.py --steps=2 --warmup=1 --rounds=1 --infer_steps=2

# DM with probe refinement on the measured Siemens star (needs ../shared/data).
siemens-star: install
	$(PYTHON) tools/siemens_star.py
