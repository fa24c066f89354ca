# The two commands: `make pipeline` (runs the whole pipeline) and `make test`. Both set up .venv first.
# Every other target is a one-line alias of an `animerec` subcommand (`.venv/bin/animerec --help`): a Make
# variable is the option of the same name (USER_ID=5 → --user-id 5, TOP=8 → --top 8); settings come from
# ANIMEREC_* variables for every target, MODEL_NAME=… is ANIMEREC_REGISTERED_MODEL_NAME; VERBOSE=1 shows the
# libraries' own output too (--verbose).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/animerec $(if $(VERBOSE),--verbose)
# DEVICE=gpu: TensorFlow's CUDA build (Linux, NVIDIA; the version pyproject.toml pins) replaces the CPU build
# pyproject.toml installs; Keras then trains on the GPU (docs/training.md). A fresh .venv is CPU-only again.
ifneq ($(filter-out cpu gpu,$(DEVICE)),)
$(error DEVICE=$(DEVICE): use DEVICE=gpu, or DEVICE=cpu (the default))
endif
DEVICE_STAMP := $(if $(filter gpu,$(DEVICE)),-gpu)
STAMP := $(VENV)/.installed$(DEVICE_STAMP)
BENCH_STAMP := $(VENV)/.bench-installed$(DEVICE_STAMP)
TENSORFLOW_VERSION := $(shell sed -n 's/.*"tensorflow-cpu==\([0-9.]*\).*/\1/p' pyproject.toml)
USE_DEVICE = $(if $(DEVICE_STAMP),$(PY) -m pip uninstall --quiet -y tensorflow-cpu tensorflow && $(PY) -m pip install --quiet 'tensorflow[and-cuda]==$(TENSORFLOW_VERSION)',true)

ifdef MODEL_NAME
export ANIMEREC_REGISTERED_MODEL_NAME := $(MODEL_NAME)
endif
# $(call opt,VAR,option) → --option 'value' when VAR is set
opt = $(if $($(1)),--$(2) '$($(1))')
DATA_OPTIONS = $(call opt,DATA,data) $(call opt,RATING_SCALE,rating-scale) $(call opt,DATASET_NAME,dataset-name)

.PHONY: setup pipeline test sweep bench ui serve compare promote recommend similar similar-users serve-model app browser postgres lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(USE_DEVICE)
	touch $(STAMP)

setup: $(STAMP) ## create .venv from pyproject.toml

pipeline: $(STAMP) ## retrain: DATA=folder or .zip, RATING_SCALE=1-5, DATASET_NAME=…, MODEL_NAME=…, EPOCHS=n, DASK=local|tcp://…, DEVICE=gpu
	$(CLI) retrain $(DATA_OPTIONS) $(call opt,EPOCHS,epochs) $(call opt,DASK,dask)

# The browser tests drive Debian's Chromium (installed here when missing; no browser download from elsewhere).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The ratings database's tests start a real PostgreSQL server: Debian's package, installed here when missing.
postgres:
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# One worker more than cores (at most 4): many tests wait on a server or a child process, leaving a core idle.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n + 1 < 4 ? n + 1 : 4 )))

test: $(STAMP) browser postgres ## run the test suite on TEST_WORKERS processes (cores + 1, at most 4)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

sweep: $(STAMP) ## grid search on Dask, best on validation: DATA=…, KIND=rating|ranking, SPACE='{"l2": [...]}', DASK=tcp://…
	$(CLI) sweep $(DATA_OPTIONS) $(call opt,KIND,kind) $(call opt,SPACE,space) $(call opt,DASK,dask)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(USE_DEVICE)
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) browser ## benchmarks → BENCHMARKS.md: PARTS=accuracy,…,scale (default) or full SIZE=… LAYOUT=…
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)  # the app part's load
	$(CLI) bench $(call opt,PARTS,parts) $(call opt,SIZE,size) $(call opt,LAYOUT,layout)

ui: $(STAMP) ## MLflow UI on 127.0.0.1:5000 over the local store (PORT=…)
	$(CLI) ui $(call opt,PORT,port)

serve: $(STAMP) ## Prefect server on 127.0.0.1:4200 (if none answers) + scheduled retrain: DATA=…, CRON=…, PORT=…
	$(CLI) serve $(DATA_OPTIONS) $(call opt,CRON,cron) $(call opt,PORT,port)

compare: $(STAMP) ## table + PNG chart of every registered version of MODEL_NAME, by data set (CHART=path.png)
	$(CLI) compare $(call opt,CHART,chart)

promote: $(STAMP) ## make a version champion by hand: VERSION=3 REASON="why"
	$(CLI) promote $(call opt,VERSION,version) $(call opt,REASON,reason)

recommend: $(STAMP) ## top-N: USER_ID=5 (or RATINGS=my.csv), TOP=10, GENRE=…, TYPE=…, MIN_RATINGS=…, NEW=1 (new anime too), MODEL=champion
	$(CLI) recommend $(call opt,USER_ID,user-id) $(call opt,RATINGS,ratings) $(call opt,TOP,top) $(call opt,GENRE,genre) $(call opt,TYPE,type) $(call opt,MIN_RATINGS,min-ratings) $(if $(NEW),--new) $(call opt,MODEL,model)

similar: $(STAMP) ## anime that go with another: ANIME="Cowboy Bebop", TOP=10, MODEL=champion
	$(CLI) similar $(call opt,ANIME,anime) $(call opt,TOP,top) $(call opt,MODEL,model)

similar-users: $(STAMP) ## nearest users and the genres they like: USER_ID=5, TOP=10, MODEL=champion
	$(CLI) similar-users $(call opt,USER_ID,user-id) $(call opt,TOP,top) $(call opt,MODEL,model)

serve-model: $(STAMP) ## MLflow scoring server for a version on 127.0.0.1:5001: MODEL=champion, PORT=…
	$(CLI) serve-model $(call opt,MODEL,model) $(call opt,PORT,port)

app: $(STAMP) ## the web app on http://127.0.0.1:8000: MODEL=champion (alias or version), PORT=…, HOST=…, WORKERS=n
	$(CLI) app $(call opt,MODEL,model) $(call opt,PORT,port) $(call opt,HOST,host) $(call opt,WORKERS,workers)

lint: $(STAMP) ## ruff, security rules included
	$(VENV)/bin/ruff check .

clean: ## remove generated data, the MLflow store and Prefect state (keeps .venv and the ratings people gave the app)
	rm -rf .prefect
	test ! -d data || find data -mindepth 1 -maxdepth 1 ! -name 'ratings.db*' -exec rm -rf {} +
	find mlruns -mindepth 1 ! -name .gitignore -exec rm -rf {} +
