# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned to the releases this project is tested with (a range in pyproject.toml)
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# the web demo's end-to-end test drives Debian's chromium (an apt package, not a pip one)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || apt-get install -y -q chromium chromium-driver \
		|| (apt-get update -q && apt-get install -y -q chromium chromium-driver) \
		|| (echo "install chromium and chromedriver (apt-get install chromium chromium-driver) for the browser test" && false)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/scenemtl demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist worksteal tests

clean:
	rm -rf $(VENV) runs .pytest_cache
