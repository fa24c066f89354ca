# The two commands: `make pipeline` (runs the whole pipeline) and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
PARTS ?= accuracy,ranking,speed,serving,stages,scale
SIZE ?= kaggle2020
LAYOUT ?= cooperunion
DATA ?=
RATING_SCALE ?=
DATASET_NAME ?=
MODEL_NAME ?= anime-recommender
EPOCHS ?=
UI_PORT ?= 5000
MODEL_PORT ?= 5001

# Quiet offline: no analytics or telemetry from Prefect, MLflow or Great Expectations.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PREFECT_HOME := $(CURDIR)/.prefect
# MODEL_NAME=…: the registered model every target uses (one per data set keeps their versions apart).
export ANIMEREC_REGISTERED_MODEL_NAME := $(MODEL_NAME)
DATA_OPTIONS = $(if $(DATA),--data $(DATA)) $(if $(RATING_SCALE),--rating-scale $(RATING_SCALE)) \
	$(if $(DATASET_NAME),--dataset-name $(DATASET_NAME))

.PHONY: setup pipeline test sweep bench ui serve compare promote recommend similar serve-model lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv from pyproject.toml

pipeline: $(STAMP) ## run the retrain flow (DATA=folder or .zip, RATING_SCALE=1-5, DATASET_NAME=…, MODEL_NAME=…, EPOCHS=n)
	$(PY) -m flows.retrain $(DATA_OPTIONS) $(if $(EPOCHS),--epochs $(EPOCHS))

test: $(STAMP) ## run the test suite
	$(PY) -m pytest

sweep: $(STAMP) ## grid search, best on validation (DATA=folder, MODEL=rating|ranking, SPACE='{"l2": [...]}')
	$(PY) -m flows.sweep $(DATA_OPTIONS) $(if $(MODEL),--model $(MODEL)) $(if $(SPACE),--space '$(SPACE)')

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## benchmarks → BENCHMARKS.md (PARTS=accuracy,ranking,speed,serving,stages,scale SIZE=… LAYOUT=…)
	$(PY) -m benchmarks.bench --parts $(PARTS) --size $(SIZE) --layout $(LAYOUT)

ui: $(STAMP) ## MLflow UI on 127.0.0.1 over the local store
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port $(UI_PORT)

serve: $(STAMP) ## Prefect server on 127.0.0.1:4200 (if none answers) + retrain on a cron schedule (CRON=...)
	$(PY) -m flows.serve $(DATA_OPTIONS) $(if $(CRON),--cron "$(CRON)")

compare: $(STAMP) ## table + PNG chart of every registered version of MODEL_NAME, by data set
	$(PY) -m pipeline compare

promote: $(STAMP) ## make VERSION=n champion by hand: make promote VERSION=3 REASON="why"
	@test -n "$(VERSION)" || (echo 'usage: make promote VERSION=n REASON="why"' >&2; exit 2)
	$(PY) -m pipeline promote $(VERSION) --reason "$(REASON)"

recommend: $(STAMP) ## top-N for a user: make recommend USER_ID=5 [N=10] (or RATINGS=my.csv)
	$(PY) -m pipeline recommend $(if $(RATINGS),--ratings $(RATINGS),--user $(USER_ID)) -n $(or $(N),10)

similar: $(STAMP) ## anime like another: make similar ANIME="Cowboy Bebop"
	$(PY) -m pipeline similar --anime "$(ANIME)" -n $(or $(N),10)

serve-model: $(STAMP) ## MLflow scoring server for the champion on 127.0.0.1:$(MODEL_PORT)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlruns/mlflow.db mlflow models serve \
		-m models:/$(MODEL_NAME)@champion --env-manager local --host 127.0.0.1 --port $(MODEL_PORT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean: ## remove generated data, the MLflow store and Prefect state (keeps .venv)
	rm -rf data .prefect
	find mlruns -mindepth 1 ! -name .gitignore -exec rm -rf {} +
