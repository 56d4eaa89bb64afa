# geoviz — two commands: `make lab` and `make test`. Both create .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ROOT_FLAG := $(shell [ "$$(id -u)" = "0" ] && echo --allow-root)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install lab test test-unit test-notebooks test-browser demo bench clean
# the test stages share two cores and the browser suite reads the runs nbval made: never in parallel (make -j)
.NOTPARALLEL:

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name geoviz --display-name "Python (geoviz)" >/dev/null
	@touch $(STAMP)

install: $(STAMP)

# JupyterLab on localhost only, with a random token (printed in the URL), opening the quickstart.
lab: install
	$(VENV)/bin/jupyter lab notebooks/00_quickstart.ipynb --ServerApp.ip=127.0.0.1 $(ROOT_FLAG)

# Everything CI checks: unit tests, notebooks (nbval + papermill), the browser suite.
test: install
	rm -rf runs/test
	$(MAKE) --no-print-directory test-unit test-notebooks test-browser

# Two pytest workers on two cores (loadgroup: the tests marked xdist_group("ray") share one worker, which starts
# Ray once; pyproject keeps pytest below 9.2, which broke the grouping): one thread per process (kernels and subprocesses included). With
# torch's default of one thread per core, two notebooks in parallel ran 6x slower (OpenMP threads
# spinning against each other): nbval took 204 s instead of 36 s.
test-unit: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	rm -rf runs/test/unit  # runs made by earlier code would be refused (stale), not silently reused
	OMP_NUM_THREADS=1 GEOVIZ_PROGRESS=0 GEOVIZ_RUNS=$(CURDIR)/runs/test/unit $(PY) -m pytest -n 2 --dist loadgroup -q --durations=15 tests -m "not browser"

# Progress bars on: nbval is where training runs inside a kernel with tqdm's widgets (the browser suite
# reads these runs back), at no measurable cost (01 and 06: 105 s with bars, 118 s without).
test-notebooks: install
	rm -rf runs/test/nbval
	OMP_NUM_THREADS=1 GEOVIZ_PROFILE=smoke GEOVIZ_PROGRESS=1 GEOVIZ_RUNS=$(CURDIR)/runs/test/nbval $(PY) -m pytest -q -n 2 --dist loadfile \
		--nbval-lax --nbval-current-env -p no:cacheprovider notebooks

# The browser suite checks how the notebooks render and respond in JupyterLab; their smoke runs read back the
# ones nbval just trained (same code; reuse="fresh" retrains any made by other code, e.g. when run alone after
# an edit): nbval and papermill (test-unit) each run every notebook's training from scratch already.
test-browser: install
	GEOVIZ_PROFILE=smoke GEOVIZ_REUSE=fresh GEOVIZ_RUNS=$(CURDIR)/runs/test/nbval $(PY) -m pytest -q -s tests/browser -m browser

# Every notebook headless with papermill (quick profile), HTML beside each, in runs/notebooks/.
demo: install
	$(VENV)/bin/geoviz demo --profile quick --out runs/notebooks

bench: install
	$(PY) benchmarks/capture.py
	$(PY) benchmarks/transfer_step.py
	$(PY) benchmarks/keypoints.py
	$(PY) benchmarks/reliability.py
	$(PY) benchmarks/geometry_variants.py
	$(PY) benchmarks/pruning.py
	$(PY) benchmarks/corruptions.py
	$(PY) benchmarks/ensembles.py
	$(PY) benchmarks/cnnmda.py
	$(PY) benchmarks/geometry.py
	$(PY) benchmarks/explore.py
	$(PY) benchmarks/executors.py

clean:
	rm -rf runs/test .pytest_cache notebooks/runs  # notebooks/runs: where older versions put nbval runs
