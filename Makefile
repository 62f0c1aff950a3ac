# Thin wrapper around CMake. `make` builds into build/.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build deps test test-deploy unit system demo asan asan-test fuzz bench clean format

all: build

deps:
	@sh scripts/install-deps.sh

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
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
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLLMQ_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)

asan-test: deps asan
	@cd build-asan && ctest --output-on-failure -j 2

fuzz:
	@LLMQ_EXTRA_PKGS=clang sh scripts/install-deps.sh
	@CC=clang cmake -S . -B build-fuzz -DLLMQ_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzz_msg
	@mkdir -p build-fuzz/corpus
	@./build-fuzz/fuzz_msg -max_total_time=$${FUZZ_SECONDS:-60} build-fuzz/corpus tests/fuzz/seeds

bench: deps build
	@sh bench/run.sh

clean:
	rm -rf $(BUILD) build-asan build-fuzz
