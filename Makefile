# kvmem — top-level build.
#
#   make            build build/kvmem
#   make run        install missing Debian packages, build, boot configs/hello.json
#   make test       build and run every test; ends with "N passed, N failed"
#   make sanitize   the same tests under ASan + UBSan (build-asan/)
#   make tsan       the threaded tests (allocator, vCPU stop and pause, free-page
#                   reports, the console, memory and thread limits, guest memory
#                   regions, stress) under ThreadSanitizer (build-tsan/)
#   make fuzz       install clang-19, build each libFuzzer target (*_fuzz.cc) into
#                   build-fuzz/ and run it for FUZZ_SECONDS (60) seconds
#                   (docs/fuzzing.md)
#   make clean

CXX      ?= g++
BUILD    ?= build
OPT      ?= -O2
CXXFLAGS ?= $(OPT) -g
CXXFLAGS += -std=c++2b -Wall -Wextra -Wshadow -Wconversion -Wno-sign-conversion \
            -MMD -MP -I. -pthread
# The JSON library's exceptions name the pointer of the value they are about,
# for config errors (config/fields.h); every file must agree on it.
CXXFLAGS += -DJSON_DIAGNOSTICS=1
LDLIBS   += -lasmjit -lfmt -lxxhash -pthread

# librsvg2-bin: rsvg-convert, with which a test renders bench fault's SVG.
# libxxhash-dev: XXH3-64, the checksums of snapshot files (snapshot/format.h).
DEBIAN_PACKAGES := g++ make linux-libc-dev libasmjit-dev catch2 nlohmann-json3-dev \
                   libcli11-dev libfmt-dev librsvg2-bin libxxhash-dev

# One folder per concern; docs/design.md, "Layers", has their order and
# tools/check-layers enforces it.
LIB_DIRS  := base memory memory/tmpfs snapshot guest vmm/kvm vmm/memory vmm/devices vmm config harness bench
# Fuzz targets (*_fuzz.cc) sit beside the code they fuzz but are not part of
# the library: the test binary links them all to replay their corpora, and
# `make fuzz` links each alone with libFuzzer.
ALL_SRCS  := $(sort $(foreach d,$(LIB_DIRS) cli,$(wildcard $(d)/*.cc)))
FUZZ_SRCS := $(filter %_fuzz.cc,$(ALL_SRCS))
LIB_SRCS  := $(filter-out %_fuzz.cc cli/%,$(ALL_SRCS))
MAIN_SRCS := $(filter-out %_fuzz.cc,$(filter cli/%,$(ALL_SRCS)))
TEST_SRCS := $(sort $(wildcard tests/*.cc tests/*/*.cc tests/*/*/*.cc))

LIB_OBJS  := $(LIB_SRCS:%.cc=$(BUILD)/%.o)
MAIN_OBJS := $(MAIN_SRCS:%.cc=$(BUILD)/%.o)
TEST_OBJS := $(TEST_SRCS:%.cc=$(BUILD)/%.o)
FUZZ_OBJS := $(FUZZ_SRCS:%.cc=$(BUILD)/%.o)
# The target names: "config" for harness/config_fuzz.cc, and so on.
FUZZ_TARGETS := $(patsubst %_fuzz.cc,%,$(notdir $(FUZZ_SRCS)))

.PHONY: all run test layers sanitize tsan fuzz fuzz-build deps clean
.DEFAULT_GOAL := all

all: $(BUILD)/kvmem

# Quiet by default: one short line per step; V=1 shows the commands.
ifeq ($(V),1)
  Q :=
  say = @true
else
  Q := @
  say = @printf '  %-5s %s\n'
endif

$(BUILD)/libkvmem.a: $(LIB_OBJS)
	@mkdir -p $(@D)
	$(say) AR $@
	@# Afresh each time: `ar r` keeps members whose sources are gone, and
	@# replaces by file name, so guest/boot.o and bench/boot.o collide.
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/kvmem: $(MAIN_OBJS) $(BUILD)/libkvmem.a
	$(say) LINK $@
	$(Q)$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/kvmem-tests: $(TEST_OBJS) $(FUZZ_OBJS) $(BUILD)/libkvmem.a
	$(say) LINK $@
	$(Q)$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.cc
	@mkdir -p $(@D)
	$(say) CXX $<
	$(Q)$(CXX) $(CXXFLAGS) -c -o $@ $<

# Installs only what is missing; prints the command instead when not root.
deps:
	@./tools/install-deps $(DEBIAN_PACKAGES)

run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/kvmem run configs/hello.json

# No file includes from a folder above its own (docs/design.md, "Layers").
layers:
	@./tools/check-layers

test: layers $(BUILD)/kvmem $(BUILD)/kvmem-tests
	@./tools/run-tests $(BUILD)

sanitize:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1" \
	    CXXFLAGS_EXTRA="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	    test

# [fork] tests fork a multi-threaded process, which TSan cannot follow.
tsan:
	@$(MAKE) --no-print-directory BUILD=build-tsan OPT="-O1" \
	    CXXFLAGS_EXTRA="-fsanitize=thread" build-tsan/kvmem build-tsan/kvmem-tests
	KVMEM_BIN=build-tsan/kvmem TSAN_OPTIONS=halt_on_error=1 \
	    build-tsan/kvmem-tests "[threads]~[fork],[free]~[fork],[stress],[limits]~[fork],[console],[regions],[tmpfs]~[fork],[windows],[vcpus],[backing],[lazy]"

# libFuzzer needs clang; nothing else in the build does.
FUZZ_SECONDS ?= 60
FUZZ_PACKAGES := clang-19 libclang-rt-19-dev
FUZZ_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
              -fno-sanitize-recover=undefined -DKVMEM_LIBFUZZER

fuzz:
	@./tools/install-deps $(DEBIAN_PACKAGES) $(FUZZ_PACKAGES)
	@$(MAKE) --no-print-directory BUILD=build-fuzz CXX=clang++-19 OPT="-O1" \
	    CXXFLAGS_EXTRA="$(FUZZ_FLAGS)" fuzz-build
	@./tools/run-fuzz build-fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-build: $(addprefix $(BUILD)/fuzz-,$(FUZZ_TARGETS))

# build-fuzz/fuzz-NAME from NAME_fuzz.cc and the library.
define fuzz_link
$(BUILD)/fuzz-$(patsubst %_fuzz.cc,%,$(notdir $(1))): $(BUILD)/$(1:.cc=.o) $(BUILD)/libkvmem.a
	$$(say) LINK $$@
	$$(Q)$$(CXX) $$(CXXFLAGS) -fsanitize=fuzzer -o $$@ $$^ $$(LDLIBS)
endef
$(foreach s,$(FUZZ_SRCS),$(eval $(call fuzz_link,$(s))))

CXXFLAGS += $(CXXFLAGS_EXTRA)

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(LIB_OBJS:.o=.d) $(MAIN_OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(FUZZ_OBJS:.o=.d)
