# Two commands do everything on a fresh x86_64 machine with Python 3.11:
#   make demo   -- set up .venv (once) and annotate the shared example media
#   make test   -- set up .venv (once) and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
SHARED ?= ../shared

.PHONY: setup demo test benchmark results

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -e '.[dev,serve]'
	# facenet-pytorch pins torch<2.3, numpy<2, Pillow<10.3, which this project's versions break on
	# paper only (its MTCNN is tested here on the torch we ship). Installed last and without its
	# dependencies, pip has nothing to resolve and prints no resolver error; `pip check` still
	# lists those three pins, and that is the whole of it.
	$(VENV)/bin/pip install --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fer annotate $(SHARED)/media --out out/demo.parquet

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/annotate_throughput.py

# The committed results/ folder: the shipped weights on PublicTest, and an example report
# of media the project generates itself from FER2013 PublicTest faces.
results: $(STAMP)
	$(VENV)/bin/fer evaluate --data $(SHARED)/fer2013 --split test --out results/publictest
	$(VENV)/bin/python examples/make_demo_media.py --fer $(SHARED)/fer2013 --out out/demo-media
	$(VENV)/bin/fer annotate out/demo-media --out out/example/demo.parquet \
		--report results/example-report/report.html --render results/example-report/annotated
