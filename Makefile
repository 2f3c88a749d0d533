# kvmem — top-level build.
#
#   make            build build/kvmem
#   make run        install missing Debian packages, build, boot configs/hello.json
#   make test       build and run every test; ends with "N passed, N failed"
#   make sanitize   the same tests under ASan + UBSan (build-asan/)
#   make tsan       the threaded tests (allocator, vCPU stop and pause, free-page
#                   reports, the console, memory and thread limits, stress) under
#                   ThreadSanitizer (build-tsan/)
#   make clean

CXX      ?= g++
BUILD    ?= build
OPT      ?= -O2
CXXFLAGS ?= $(OPT) -g
CXXFLAGS += -std=c++2b -Wall -Wextra -Wshadow -Wconversion -Wno-sign-conversion \
            -MMD -MP -I. -pthread
LDLIBS   += -lasmjit -lfmt -pthread

DEBIAN_PACKAGES := g++ make linux-libc-dev libasmjit-dev catch2 nlohmann-json3-dev \
                   libcli11-dev libfmt-dev

# One folder per concern; docs/design.md, "Layers", has their order and
# tools/check-layers enforces it.
LIB_DIRS  := base memory memory/tmpfs guest vmm/kvm vmm/memory vmm/devices vmm config harness bench
LIB_SRCS  := $(sort $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.cc)))
MAIN_SRCS := $(sort $(wildcard cli/*.cc))
TEST_SRCS := $(sort $(wildcard tests/*.cc tests/*/*.cc tests/*/*/*.cc))

LIB_OBJS  := $(LIB_SRCS:%.cc=$(BUILD)/%.o)
MAIN_OBJS := $(MAIN_SRCS:%.cc=$(BUILD)/%.o)
TEST_OBJS := $(TEST_SRCS:%.cc=$(BUILD)/%.o)

.PHONY: all run test layers sanitize tsan deps clean
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
	@# Made anew: `ar r` never drops a member whose source is gone, and it
	@# replaces members by base name (bench/boot.o and guest/boot.o).
	$(Q)rm -f $@
	$(Q)$(AR) rcs $@ $^

$(BUILD)/kvmem: $(MAIN_OBJS) $(BUILD)/libkvmem.a
	$(say) LINK $@
	$(Q)$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/kvmem-tests: $(TEST_OBJS) $(BUILD)/libkvmem.a
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
	    build-tsan/kvmem-tests "[threads]~[fork],[free]~[fork],[stress],[limits]~[fork],[console]"

CXXFLAGS += $(CXXFLAGS_EXTRA)

clean:
	rm -rf build build-asan build-tsan

-include $(LIB_OBJS:.o=.d) $(MAIN_OBJS:.o=.d) $(TEST_OBJS:.o=.d)
