# Thin wrapper around CMake. `make` builds into build/.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build deps test unit system demo asan asan-test fuzz fuzz-list bench clean format

all: build

deps:
	@sh scripts/install-deps.sh

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: deps build
	@cd $(BUILD) && ctest --output-on-failure -j 2

unit: build
	@cd $(BUILD) && ctest --output-on-failure -R '^unit\.'

system: build
	@cd $(BUILD) && ctest --output-on-failure -R '^system\.'

demo: deps build
	@/usr/bin/python3 scripts/demo.py --bin $(BUILD)

asan:
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLLMQ_SANITIZE=ON >/dev/null
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

clean:
	rm -rf $(BUILD) build-asan build-fuzz
