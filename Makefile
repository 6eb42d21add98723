VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Two install steps: what running needs (run, install, demo: `pip install -e .`), and the
# test and packaging tools on top (test, lint, bench, fuzz, dist: `.[test]`)
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
DIST ?= dist

# Debian packages the tests need (the sshfs test bed, tests/netshare.py; the browser that
# tests/test_web.py drives), installed by `make test` when missing. --no-install-recommends:
# openssh-sftp-server recommends openssh-server, which the tests do not need and must not
# install.
TEST_DEBS := sshfs openssh-sftp-server fuse3 libarchive-tools zip unzip p7zip-full \
	chromium chromium-driver libarchive13 7zip unar

# Real RAR archives (nobody may make them without the non-free `rar`): the test files of
# rarfile's source release on PyPI, made by WinRAR and rar 2.x-6.x (tests/rarfiles.py)
RAR_FIXTURES := $(VENV)/fixtures/rarfile
RARFILE_SDIST := rarfile==4.5

# The suite in parallel (pytest-xdist): its tests mostly wait on daemons, servers and
# subprocesses, so 4 workers fit 2 cores; worksteal keeps the long tests from piling up
# at the end. A single file runs plainly: `.venv/bin/python -m pytest tests/test_x.py`.
PYTEST_PARALLEL ?= -n 4 --dist worksteal

.PHONY: install run demo dist test test-fast test-deps lint bench fuzz clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

# the test extra holds the package's own dependencies too: the run stamp is true as well
$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/dropfetch run

# Sample archives served on loopback, downloaded by a daemon, shown by `status --watch`;
# ends when every job has ended (DEMO_ARGS: e.g. --big 8MiB --rate 0)
demo: $(RUN_STAMP)
	$(VENV)/bin/dropfetch demo --dir var/demo $(DEMO_ARGS)

# The sdist and the wheel into $(DIST), checked by twine
dist: $(TEST_STAMP)
	rm -f $(DIST)/dropfetch-*
	$(PY) -m build --outdir $(DIST) .
	$(VENV)/bin/twine check --strict $(DIST)/*

$(RAR_FIXTURES)/.done: | $(PY)
	rm -rf $(RAR_FIXTURES) && mkdir -p $(RAR_FIXTURES)
	$(PY) -m pip download -q --no-deps --no-binary :all: -d $(RAR_FIXTURES) '$(RARFILE_SDIST)'
	tar -xzf $(RAR_FIXTURES)/rarfile-*.tar.gz -C $(RAR_FIXTURES) --strip-components=3 \
	    --wildcards '*/test/files/*'
	touch $@

test: $(TEST_STAMP) test-deps $(RAR_FIXTURES)/.done
	$(PY) -m pytest -q $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The quick inner loop: all but the end-to-end (whole daemon) and shared-filesystem tests
test-fast: $(TEST_STAMP) test-deps $(RAR_FIXTURES)/.done
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not e2e and not netshare and not slow" $(PYTEST_ARGS)

test-deps:
	@missing=$$(for p in $(TEST_DEBS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q ' installed$$' || echo $$p; \
	done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "make test-deps: missing" $$missing "(apt-get install them as root);" \
	         "the tests that need them are skipped"; exit 0; \
	fi; \
	echo "make test-deps: installing" $$missing; \
	apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing

# ruff (with C90 at 12, ARG, SLF) and its formatter, mypy (strict on the package, the
# default checks on tests, bench and tools), and the package's shape rules (tools/shape.py)
lint: $(TEST_STAMP)
	$(VENV)/bin/ruff format --check daemon tests bench tools
	$(VENV)/bin/ruff check daemon tests bench tools
	$(VENV)/bin/mypy
	$(PY) tools/shape.py daemon/dropfetch

bench: $(TEST_STAMP)
	$(PY) bench/run.py

# Differential fuzzing of extraction against GNU tar, bsdtar, unzip, 7zz and unar (docs/FUZZ.md).
# FUZZ_CASES=N cases from seed FUZZ_SEED.
FUZZ_CASES ?= 2000
FUZZ_SEED ?= 20261201
fuzz: $(TEST_STAMP)
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_SEED=$(FUZZ_SEED) $(PY) tests/fuzz_extract.py --keep var/fuzz

clean:
	rm -rf $(VENV) var dist build .pytest_cache .mypy_cache .ruff_cache
