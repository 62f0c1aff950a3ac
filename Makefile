# Thin wrapper around CMake. `make` builds into build/.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build deps test test-deploy unit system demo asan asan-test fuzz fuzz-list bench clean format install deb test-deb test-builds

all: build

deps:
	@sh scripts/install-deps.sh

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLMQ_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: deps build
	@cd $(BUILD) && ctest --output-on-failure -j 2
	@cat $(BUILD)/deploy-figures.txt 2>/dev/null || true

unit: build
	@cd $(BUILD) && ctest --output-on-failure -R '^unit\.'

# The deployment tests alone: deploy/k8s validated offline, then the compose
# stack in containers (images built locally; SKIP without a Docker Engine).
test-deploy: deps build
	@/usr/bin/python3 tests/deploy/test_k8s.py --bin $(BUILD)
	@/usr/bin/python3 tests/deploy/test_compose.py

system: build
	@cd $(BUILD) && ctest --output-on-failure -R '^system\.'

demo: deps build
	@/usr/bin/python3 scripts/demo.py --bin $(BUILD)

asan:
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLLMQ_SANITIZE=ON -DLLMQ_WERROR=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)

asan-test: deps asan
	@cd build-asan && ctest --output-on-failure -j 2

# make fuzz [FUZZ_TARGET=name|list] [FUZZ_SECONDS=60]: every target in turn
# when FUZZ_TARGET is empty. See scripts/fuzz.sh.
fuzz: deps
	@if [ "$(FUZZ_TARGET)" = list ]; then sh scripts/fuzz.sh list; exit 0; fi; \
	sh scripts/fuzz.sh build && \
	for t in $${FUZZ_TARGET:-$$(sh scripts/fuzz.sh list)}; do \
		sh scripts/fuzz.sh run $$t $${FUZZ_SECONDS:-60} || exit 1; done

fuzz-list:
	@sh scripts/fuzz.sh list

bench: deps build
	@sh bench/run.sh

# make install [DESTDIR=/tmp/root] [PREFIX=/usr/local]
PREFIX ?= /usr/local
install:
	@cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD)

# The Debian package (CPack): build-deb/llmq_<version>_<arch>.deb
deb:
	@cmake -S . -B build-deb -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DLLMQ_WERROR=ON >/dev/null
	@cmake --build build-deb -j $(JOBS)
	@cd build-deb && cpack -G DEB >/dev/null && ls -1 $$PWD/*.deb

# Installs the .deb into a clean Debian 12 container and runs a batch there
# (needs Docker and the Debian mirror; SKIP without Docker).
test-deb: deps
	@sh tests/deb/test_deb.sh

# Release, Debug, MinSizeRel with gcc and clang from a clean checkout (12 builds).
test-builds:
	@sh tests/packaging/test_builds.sh

clean:
	rm -rf $(BUILD) build-asan build-fuzz build-deb
