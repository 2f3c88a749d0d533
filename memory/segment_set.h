// SegmentSet: an ordered map from disjoint ranges to values, kept maximally
// merged, with an index over its gaps.
//
// (Past the ~500-line guide on purpose: one container, its node type, its
// iterators and its gap index belong together, as LLVM's IntervalMap is one
// header.)
//
// It is the one range map behind the allocator's usage, a file's data map and
// the guest-physical map. The key space is [0, 2^64 - 1). Every key is either
// in exactly one segment or in exactly one gap; gaps lie between segments (and
// before the first and after the last) and may be empty when two segments
// touch.
//
// Synopsis (n = number of segments; "log n" is expected, the tree is a treap)
//   SegmentSet<Key, Value, Policy>   Key is a Range<Tag>; Policy says when two
//                                    touching neighbours merge and how a value
//                                    splits (MergeEqual: equal values merge)
//   find(k) find_segment(k) find_gap(k)              O(log n); O(1) when k
//                           is in, before or just after the finger (below)
//   lower_bound_segment(k)  first segment with end > k          O(log n)
//   upper_bound_segment(k)  last segment with start <= k        O(log n)
//   lower_bound_gap(k)      first gap with end > k              O(log n)
//   upper_bound_gap(k)      last gap with start <= k            O(log n)
//   first_/last_segment(), first_/last_gap()                    O(log n)
//   Seg/Gap next_/prev_segment(), next_/prev_gap()   amortised O(1), O(log n) worst
//   insert(gap, r, v)       into a gap, merging with neighbours O(log n)
//   add(r, v)               insert if r lies in one gap         O(log n)
//   remove(seg)  remove_range(r)                       O(log n) per segment
//   split(seg, at)  isolate(seg, r)                             O(log n)
//   apply_contiguous(r, fn) isolate and visit each segment over r, stop at
//                           the first non-empty gap and return it  O(k log n)
//   merge(a, b)  merge_range(r)  merge_adjacent(r)      O(log n) per merge
//   apply_and_merge(r, fn)  apply_contiguous, then merge what fn touched
//                           and its outer neighbours, without new lookups
//   first_fit(k, len, align) the lowest gap holding len bytes at an align-
//                           aligned start >= k       O(log n) (see below)
//   check_invariants()      O(n); for tests
//
// first_fit keeps the largest gap per subtree, so it only descends into
// subtrees that hold a gap at least len long: O(log n) when align divides the
// gap bounds (the allocator's page-aligned case). A gap that is long enough
// but fails only because of k or of alignment costs one more O(log n) descent;
// only one gap can straddle k, so the bound is O(log n * (1 + m)) where m is
// the number of gaps before the answer whose length lies in [len, len+align).
//
// The finger: mutators leave it on the segment they last worked on (insert:
// the one it made or merged into; remove: the one after the removed range;
// apply_contiguous: the first segment it visited), and find() tries it, the
// gap before it and its successor before descending from the root. The
// allocator's lookups are mostly there: a free right after its allocation,
// a reclaim batch walking upward, appends to a queue. At 10^6 segments a
// descent is ~30 levels of cache misses; the finger is one or two nodes
// already in cache. Lookups only read the finger, never move it: any number
// of threads may look up a set no thread is changing.
//
// Iterator validity: Seg and Gap are handles. Any mutation invalidates every
// Gap handle and every Seg handle of a segment that it removes or merges
// away. A split keeps the handle of its left part; merge and insert-with-merge
// keep the handle of the leftmost surviving segment. Values are reached
// through Seg::value(); changing one may leave neighbours mergeable, so call
// merge_range/merge_adjacent afterwards if maximal merging matters.
//
// Not thread-safe for writers: the owner's lock guards mutations. Lookups
// and iteration write nothing, so concurrent readers of an unchanging set
// need no lock.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "base/check.h"

namespace kvmem {

// The default policy: touching segments merge when their values are equal;
// a split copies the value to both halves.
template <class Key, class V>
struct MergeEqual {
  static std::optional<V> merge(const Key&, const V& a, const Key&, const V& b) {
    if (a == b) return a;
    return std::nullopt;
  }
  static std::pair<V, V> split(const Key&, const V& v, uint64_t) { return {v, v}; }
};

template <class Key, class V, class Policy = MergeEqual<Key, V>>
class SegmentSet {
  struct Node {
    Node* left = nullptr;
    Node* right = nullptr;
    Node* parent = nullptr;
    uint64_t start = 0;
    uint64_t end = 0;
    uint64_t gap_before = 0;  // length of the gap that ends at start
    uint64_t max_gap = 0;     // largest gap_before in this subtree
    uint64_t prio = 0;        // treap heap key: parent->prio >= prio
    V value{};
  };

 public:
  static constexpr uint64_t kMinKey = 0;
  static constexpr uint64_t kMaxKey = std::numeric_limits<uint64_t>::max();

  class Gap;

  // A handle to one segment.
  class Seg {
   public:
    Seg() = default;
    bool ok() const { return n_ != nullptr; }
    uint64_t start() const { return n_->start; }
    uint64_t end() const { return n_->end; }
    Key range() const { return Key(n_->start, n_->end); }
    V& value() const { return n_->value; }
    Seg next_segment() const { return Seg(set_, successor(n_)); }
    Seg prev_segment() const { return Seg(set_, predecessor(n_)); }
    Gap next_gap() const { return Gap(set_, successor(n_)); }
    Gap prev_gap() const { return Gap(set_, n_); }
    bool operator==(const Seg& o) const { return n_ == o.n_; }

   private:
    friend class SegmentSet;
    Seg(SegmentSet* s, Node* n) : set_(s), n_(n) {}
    SegmentSet* set_ = nullptr;
    Node* n_ = nullptr;
  };

  // A handle to one gap, named by the segment after it (none: the last gap).
  class Gap {
   public:
    Gap() = default;
    bool ok() const { return ok_; }
    uint64_t start() const {
      if (next_) return next_->start - next_->gap_before;
      Node* last = set_->last_node();
      return last ? last->end : kMinKey;
    }
    uint64_t end() const { return next_ ? next_->start : kMaxKey; }
    Key range() const { return Key(start(), end()); }
    uint64_t length() const { return end() - start(); }
    bool empty() const { return length() == 0; }
    Seg next_segment() const { return Seg(set_, next_); }
    Seg prev_segment() const {
      return Seg(set_, next_ ? predecessor(next_) : set_->last_node());
    }
    Gap next_gap() const { return next_ ? Gap(set_, successor(next_)) : Gap(); }
    Gap prev_gap() const {
      Seg p = prev_segment();
      return p.ok() ? Gap(set_, p.n_) : Gap();
    }
    // The next gap (after this one) at least min_length long.
    Gap next_large_enough_gap(uint64_t min_length) const {
      for (Gap g = next_gap(); g.ok(); g = g.next_gap())
        if (g.length() >= min_length) return g;
      return Gap();
    }
    bool operator==(const Gap& o) const { return ok_ == o.ok_ && (!ok_ || next_ == o.next_); }

   private:
    friend class SegmentSet;
    Gap(SegmentSet* s, Node* next) : set_(s), next_(next), ok_(true) {}
    SegmentSet* set_ = nullptr;
    Node* next_ = nullptr;
    bool ok_ = false;
  };

  struct Found {
    Seg seg;  // ok when k is in a segment
    Gap gap;  // ok when k is in a gap
  };

  // first_fit's answer: the gap, and the aligned start inside it.
  struct Fit {
    Gap gap;
    uint64_t start = 0;
    bool ok() const { return gap.ok(); }
  };

  SegmentSet() = default;
  explicit SegmentSet(uint64_t seed) : rng_(seed | 1) {}
  SegmentSet(const SegmentSet&) = delete;
  SegmentSet& operator=(const SegmentSet&) = delete;
  SegmentSet(SegmentSet&& o) noexcept { swap(o); }
  SegmentSet& operator=(SegmentSet&& o) noexcept {
    if (this != &o) {
      clear();
      swap(o);
    }
    return *this;
  }
  ~SegmentSet() {
    clear();
    free_spares();
  }

  void swap(SegmentSet& o) noexcept {
    std::swap(root_, o.root_);
    std::swap(size_, o.size_);
    std::swap(spare_, o.spare_);
    std::swap(spare_count_, o.spare_count_);
    std::swap(rng_, o.rng_);
    std::swap(finger_, o.finger_);
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() {
    free_subtree(root_);
    root_ = nullptr;
    size_ = 0;
    finger_ = nullptr;
  }

  // ---- lookup ----

  Found find(uint64_t k) {
    if (Node* h = finger_) {
      // The last segment found, inserted into or removed next to: most
      // lookups (a free right after its allocation, a reclaim batch walking
      // upward, appends to a queue) land on it, the gap before it, or the
      // segment or gap after it. Checking costs two nodes already in cache;
      // a descent costs one miss per level of a cold path.
      if (k < h->start) {
        if (k >= h->start - h->gap_before) return {Seg(), Gap(this, h)};
      } else if (k < h->end) {
        return {Seg(this, h), Gap()};
      } else {
        Node* s = successor(h);
        if (!s) return {Seg(), Gap(this, nullptr)};
        if (k < s->start) return {Seg(), Gap(this, s)};
        if (k < s->end) return {Seg(this, s), Gap()};
      }
    }
    Node* n = root_;
    Node* next = nullptr;  // smallest node with start > k
    while (n) {
      if (k < n->start) {
        next = n;
        n = n->left;
      } else if (k >= n->end) {
        n = n->right;
      } else {
        return {Seg(this, n), Gap()};
      }
    }
    return {Seg(), Gap(this, next)};
  }
  Seg find_segment(uint64_t k) { return find(k).seg; }
  Gap find_gap(uint64_t k) { return find(k).gap; }

  Seg lower_bound_segment(uint64_t k) {
    Node* cand = nullptr;
    for (Node* n = root_; n;) {
      if (n->end > k) {
        cand = n;
        n = n->left;
      } else {
        n = n->right;
      }
    }
    return Seg(this, cand);
  }
  Seg upper_bound_segment(uint64_t k) {
    Node* cand = nullptr;
    for (Node* n = root_; n;) {
      if (n->start <= k) {
        cand = n;
        n = n->right;
      } else {
        n = n->left;
      }
    }
    return Seg(this, cand);
  }
  Gap lower_bound_gap(uint64_t k) {
    Node* cand = nullptr;  // first node with start > k
    for (Node* n = root_; n;) {
      if (n->start > k) {
        cand = n;
        n = n->left;
      } else {
        n = n->right;
      }
    }
    return Gap(this, cand);
  }
  Gap upper_bound_gap(uint64_t k) {
    Node* cand = nullptr;  // last node with end <= k
    for (Node* n = root_; n;) {
      if (n->end <= k) {
        cand = n;
        n = n->right;
      } else {
        n = n->left;
      }
    }
    return cand ? Gap(this, successor(cand)) : Gap(this, first_node());
  }

  Seg first_segment() { return Seg(this, first_node()); }
  Seg last_segment() { return Seg(this, last_node()); }
  Gap first_gap() { return Gap(this, first_node()); }
  Gap last_gap() { return Gap(this, nullptr); }

  // The lowest gap holding `length` bytes starting at a multiple of `align`
  // that is >= min_start. Preconditions: length > 0, align a power of two.
  Fit first_fit(uint64_t min_start, uint64_t length, uint64_t align) {
    KVMEM_CHECK(length > 0 && align != 0 && (align & (align - 1)) == 0,
                "first_fit(length={:#x}, align={:#x})", length, align);
    uint64_t at = 0;
    if (Node* n = fit_in(root_, min_start, length, align, &at)) return {Gap(this, n), at};
    Node* last = last_node();
    if (gap_fits(last ? last->end : kMinKey, kMaxKey, min_start, length, align, &at))
      return {Gap(this, nullptr), at};
    return {};
  }

  // ---- mutation ----

  // Inserts [r) with value v into gap g, merging with the neighbours where
  // the policy allows. Preconditions: g.ok(), r non-empty and inside g.
  Seg insert(Gap g, const Key& r, const V& v) {
    Seg s = insert_merging(g, r, v);
    finger_ = s.n_;
    return s;
  }

  // Like insert, but never merges.
  Seg insert_without_merging(Gap g, const Key& r, const V& v) {
    check_insert(g, r);
    return Seg(this, insert_node(r.start, r.end, v, g.prev_segment().n_, g.next_));
  }

  // Inserts r if it lies entirely in one gap; false (and no change) if not.
  bool add(const Key& r, const V& v) {
    KVMEM_CHECK(r.start < r.end, "add of empty or ill-formed range {}", r.to_string());
    Gap g = find_gap(r.start);
    if (!g.ok() || g.end() < r.end) return false;
    insert(g, r, v);
    return true;
  }
  bool add_without_merging(const Key& r, const V& v) {
    KVMEM_CHECK(r.start < r.end, "add of empty or ill-formed range {}", r.to_string());
    Gap g = find_gap(r.start);
    if (!g.ok() || g.end() < r.end) return false;
    insert_without_merging(g, r, v);
    return true;
  }

  // Removes a segment; returns the gap that now holds its range.
  Gap remove(Seg s) {
    KVMEM_CHECK(s.ok(), "remove of an invalid segment");
    Node* next = successor(s.n_);
    remove_node(s.n_);
    finger_ = next;
    return Gap(this, next);
  }

  // Removes every part of every segment over r; returns the gap holding r.
  Gap remove_range(const Key& r) {
    KVMEM_CHECK(r.start < r.end, "remove_range of empty range {}", r.to_string());
    Seg s = lower_bound_segment(r.start);
    Gap last;
    while (s.ok() && s.start() < r.end) {
      s = isolate(s, r);
      last = remove(s);
      s = last.next_segment();
    }
    return last.ok() ? last : find_gap(r.start);
  }

  // Splits s at `at` and returns both halves. Precondition:
  // s.start() < at < s.end().
  std::pair<Seg, Seg> split(Seg s, uint64_t at) {
    KVMEM_CHECK(s.ok() && s.start() < at && at < s.end(), "split of {} at {:#x}",
                s.ok() ? s.range().to_string() : std::string("<none>"), at);
    auto [left, right] = Policy::split(s.range(), s.value(), at);
    uint64_t old_end = s.n_->end;
    // Shrinking the left part first leaves the successor's gap unchanged:
    // the new right node takes [at, old_end) with an empty gap before it.
    // The successor is needed only to find a free slot: the right part ends
    // where s ended, so the gap after it keeps its length.
    Node* succ = s.n_->right ? successor(s.n_) : nullptr;
    s.n_->end = at;
    s.n_->value = std::move(left);
    Node* r = insert_node(at, old_end, std::move(right), s.n_, succ, /*succ_gap_kept=*/true);
    return {s, Seg(this, r)};
  }

  // Splits s so that the returned segment lies inside r. Precondition: s
  // overlaps r.
  Seg isolate(Seg s, const Key& r) {
    KVMEM_CHECK(s.ok() && s.range().overlaps(r), "isolate of {} to {}",
                s.ok() ? s.range().to_string() : std::string("<none>"), r.to_string());
    if (s.start() < r.start) s = split(s, r.start).second;
    if (s.end() > r.end) s = split(s, r.end).first;
    return s;
  }

  // Visits every segment over r, each first isolated to r, in order. Stops at
  // the first non-empty gap inside r and returns it; returns a not-ok Gap
  // when segments cover all of r. fn may change values, not ranges.
  template <class F>
  Gap apply_contiguous(const Key& r, F&& fn) {
    KVMEM_CHECK(r.start < r.end, "apply_contiguous over empty range {}", r.to_string());
    Found f = find(r.start);
    if (!f.seg.ok()) return f.gap;
    Seg s = f.seg;
    finger_ = s.n_;  // a mutator may move it; find never does
    for (;;) {
      s = isolate(s, r);
      fn(s);
      if (s.end() >= r.end) return Gap();
      Gap g = s.next_gap();
      if (!g.empty()) return g;
      s = g.next_segment();
    }
  }

  // apply_contiguous, then merges what fn may have made mergeable: the
  // visited segments with each other and with their outer neighbours. Needs
  // no lookup from the root beyond apply_contiguous's own.
  template <class F>
  Gap apply_and_merge(const Key& r, F&& fn) {
    Seg first, last;
    Gap gap = apply_contiguous(r, [&](Seg s) {
      fn(s);
      if (!first.ok()) first = s;
      last = s;
    });
    if (first.ok()) merge_run(first, last);
    return gap;
  }

  // Merges the run of touching segments first..last (in order) and their
  // outer neighbours wherever the policy allows.
  void merge_run(Seg first, Seg last) {
    Seg m = merge(first.prev_segment(), first);
    if (m.ok()) {
      if (first == last) last = m;
      first = m;
    }
    for (Seg cur = first;;) {
      Seg n = cur.next_segment();
      if (!n.ok()) return;
      bool outer = cur == last;  // n is the neighbour after the run
      bool was_last = n == last;
      if (merge(cur, n).ok()) {
        if (was_last) last = cur;
      } else {
        cur = n;
      }
      if (outer) return;
    }
  }

  // Merges two touching segments if the policy allows; returns the merged
  // segment (a's handle) or a not-ok Seg.
  Seg merge(Seg a, Seg b) {
    if (!a.ok() || !b.ok() || a.end() != b.start()) return Seg();
    auto m = Policy::merge(a.range(), a.value(), b.range(), b.value());
    if (!m) return Seg();
    uint64_t end = b.n_->end;
    // a takes over b's range, so the gap after b keeps its length: no
    // successor to find and fix.
    remove_node(b.n_, /*absorbed=*/true);
    a.n_->value = std::move(*m);
    a.n_->end = end;
    return a;
  }

  // Merges every mergeable pair of touching segments that overlap r.
  void merge_range(const Key& r) {
    Seg s = lower_bound_segment(r.start);
    if (!s.ok()) return;
    for (Seg n = s.next_segment(); n.ok() && n.start() < r.end; n = s.next_segment()) {
      Seg m = merge(s, n);
      s = m.ok() ? m : n;
    }
  }

  // Merges the segments holding r.start and r.end-1 with their outer
  // neighbours, which is all an operation confined to r can have unmerged.
  void merge_adjacent(const Key& r) {
    KVMEM_CHECK(r.start < r.end, "merge_adjacent over empty range {}", r.to_string());
    Seg first = find_segment(r.start);
    if (first.ok()) merge(first.prev_segment(), first);
    Seg last = find_segment(r.end - 1);
    if (last.ok()) merge(last, last.next_segment());
  }

  // ---- checking and printing ----

  // Aborts with a dump unless: segments are non-empty, sorted and disjoint;
  // the tree's links, heap order and gap index agree with them; and (when
  // `merged`) no two touching segments are mergeable.
  void check_invariants(bool merged = true) {
    size_t count = 0;
    uint64_t prev_end = kMinKey;
    Node* prev = nullptr;
    KVMEM_CHECK(!root_ || root_->parent == nullptr, "root has a parent");
    check_node(root_, &count, &prev_end, &prev, merged);
    if (finger_) {
      Node* n = root_;
      while (n && n != finger_) n = finger_->start < n->start ? n->left : n->right;
      KVMEM_CHECK(n == finger_, "the finger {} is not a segment of the set",
                  Key(finger_->start, finger_->end).to_string());
    }
    KVMEM_CHECK(count == size_, "size() is {} but the tree holds {} segments", size_, count);
  }

  // One line per segment: "[0x0, 0x1000) <describe(value)>".
  template <class F>
  std::string dump(F&& describe) const {
    std::string out;
    for (Node* n = first_node(); n; n = successor(n))
      out += fmt::format("{} {}\n", Key(n->start, n->end).to_string(), describe(n->value));
    return out;
  }

 private:
  // ---- treap plumbing ----

  Node* first_node() const {
    Node* n = root_;
    while (n && n->left) n = n->left;
    return n;
  }
  Node* last_node() const {
    Node* n = root_;
    while (n && n->right) n = n->right;
    return n;
  }
  static Node* successor(Node* n) {
    if (!n) return nullptr;
    if (n->right) {
      n = n->right;
      while (n->left) n = n->left;
      return n;
    }
    while (n->parent && n->parent->right == n) n = n->parent;
    return n->parent;
  }
  static Node* predecessor(Node* n) {
    if (!n) return nullptr;
    if (n->left) {
      n = n->left;
      while (n->right) n = n->right;
      return n;
    }
    while (n->parent && n->parent->left == n) n = n->parent;
    return n->parent;
  }

  static uint64_t max_gap_of(const Node* n) { return n ? n->max_gap : 0; }
  static void pull(Node* n) {
    n->max_gap = std::max({n->gap_before, max_gap_of(n->left), max_gap_of(n->right)});
  }
  // Recomputes the index from n towards the root after one change at n (its
  // gap, or a child subtree gaining or losing a node) with every other node's
  // value correct. Stops at the first node whose value comes out unchanged:
  // its ancestors' inputs are then exactly what they were. Rotations keep
  // values correct themselves (they pull both nodes they move).
  static void fix_up(Node* n) {
    while (n) {
      uint64_t old = n->max_gap;
      pull(n);
      if (n->max_gap == old) return;
      n = n->parent;
    }
  }

  void replace_child(Node* parent, Node* old, Node* now) {
    if (!parent)
      root_ = now;
    else if (parent->left == old)
      parent->left = now;
    else
      parent->right = now;
    if (now) now->parent = parent;
  }
  // x's right child y takes x's place; x becomes y's left child.
  void rotate_left(Node* x) {
    Node* y = x->right;
    x->right = y->left;
    if (y->left) y->left->parent = x;
    replace_child(x->parent, x, y);
    y->left = x;
    x->parent = y;
    pull(x);
    pull(y);
  }
  void rotate_right(Node* x) {
    Node* y = x->left;
    x->left = y->right;
    if (y->right) y->right->parent = x;
    replace_child(x->parent, x, y);
    y->right = x;
    x->parent = y;
    pull(x);
    pull(y);
  }

  uint64_t next_prio() {
    // xorshift64*: per-set state, so two sets never share hidden globals.
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    return rng_ * 0x2545F4914F6CDD1DULL;
  }

  // Links a new node for [start, end) between its in-order neighbours pred
  // and succ (either may be null), which the callers know already: no
  // descent from the root. One of the two always has a free slot on the
  // side facing the other.
  // succ_gap_kept: the gap after the new node is the one succ already
  // records (a split), so succ is not touched.
  Node* insert_node(uint64_t start, uint64_t end, V v, Node* pred, Node* succ,
                    bool succ_gap_kept = false) {
    Node* n = new_node();
    n->start = start;
    n->end = end;
    n->value = std::move(v);
    n->prio = next_prio();
    if (pred && !pred->right) {
      pred->right = n;
      n->parent = pred;
    } else if (succ && !succ->left) {
      succ->left = n;
      n->parent = succ;
    } else {
      KVMEM_CHECK(!root_, "no slot between the neighbours of {}", Key(start, end).to_string());
      root_ = n;
    }
    size_++;
    while (n->parent && n->parent->prio < n->prio) {
      if (n->parent->left == n)
        rotate_right(n->parent);
      else
        rotate_left(n->parent);
    }
    n->gap_before = start - (pred ? pred->end : kMinKey);
    fix_up(n);
    if (succ && !succ_gap_kept) {
      succ->gap_before = succ->start - end;
      fix_up(succ);
    }
    return n;
  }

  // Unlinks and frees n. Its range joins the gap after it, unless the caller
  // hands it to the predecessor (absorbed: the caller sets pred->end to
  // n->end), in which case that gap keeps its length.
  void remove_node(Node* n, bool absorbed = false) {
    Node* succ = absorbed ? nullptr : successor(n);
    // The gap before succ grows by n's range and the gap before n.
    uint64_t freed = n->gap_before + (n->end - n->start);
    while (n->left && n->right) {
      if (n->left->prio > n->right->prio)
        rotate_right(n);
      else
        rotate_left(n);
    }
    Node* child = n->left ? n->left : n->right;
    Node* parent = n->parent;
    replace_child(parent, n, child);
    fix_up(parent);
    free_node(n);
    size_--;
    if (succ) {
      succ->gap_before += freed;
      fix_up(succ);
    }
  }

  void set_start(Node* n, uint64_t start) {
    n->gap_before -= n->start - start;
    n->start = start;
    fix_up(n);
  }

  // insert without the finger update.
  Seg insert_merging(Gap g, const Key& r, const V& v) {
    check_insert(g, r);
    Seg prev = g.prev_segment();

    Seg next = g.next_segment();
    if (prev.ok() && prev.end() == r.start) {
      if (auto m = Policy::merge(prev.range(), prev.value(), r, v)) {
        prev.n_->value = std::move(*m);
        prev.n_->end = r.end;  // next, if any, bounds the gap after prev
        if (next.ok()) {
          next.n_->gap_before = next.n_->start - r.end;
          fix_up(next.n_);
        }
        if (next.ok() && next.start() == r.end) {
          Seg merged = merge(prev, next);
          if (merged.ok()) return merged;
        }
        return prev;
      }
    }
    if (next.ok() && next.start() == r.end) {
      if (auto m = Policy::merge(r, v, next.range(), next.value())) {
        next.n_->value = std::move(*m);
        set_start(next.n_, r.start);
        return next;
      }
    }
    return Seg(this, insert_node(r.start, r.end, v, prev.n_, next.n_));
  }

  void check_insert(const Gap& g, const Key& r) {
    KVMEM_CHECK(g.ok() && r.start < r.end && g.start() <= r.start && r.end <= g.end(),
                "insert of {} into gap {}", r.to_string(),
                g.ok() ? g.range().to_string() : std::string("<none>"));
  }

  static bool gap_fits(uint64_t gs, uint64_t ge, uint64_t min_start, uint64_t length,
                       uint64_t align, uint64_t* at) {
    uint64_t s = std::max(gs, min_start);
    uint64_t a = (s + (align - 1)) & ~(align - 1);
    if (a < s || a > ge || ge - a < length) return false;
    *at = a;
    return true;
  }

  // In-order search for the first gap that fits, pruned by the index: a
  // subtree whose largest gap is shorter than length has no answer, and the
  // gap before a node (and every gap left of it) ends at or before its start,
  // so nodes starting at or below min_start only have answers to the right.
  static Node* fit_in(Node* n, uint64_t min_start, uint64_t length, uint64_t align,
                      uint64_t* at) {
    while (n && n->max_gap >= length) {
      if (n->start > min_start) {
        if (Node* l = fit_in(n->left, min_start, length, align, at)) return l;
        if (n->gap_before >= length &&
            gap_fits(n->start - n->gap_before, n->start, min_start, length, align, at))
          return n;
      }
      n = n->right;
    }
    return nullptr;
  }

  void check_node(Node* n, size_t* count, uint64_t* prev_end, Node** prev, bool merged) {
    if (!n) return;
    auto state = [&] { return dump([](const V&) { return ""; }); };
    if (n->left) {
      KVMEM_CHECK(n->left->parent == n, "broken parent link at {:#x}\n{}", n->start, state());
      KVMEM_CHECK(n->left->prio <= n->prio, "heap order broken at {:#x}", n->start);
    }
    if (n->right) {
      KVMEM_CHECK(n->right->parent == n, "broken parent link at {:#x}\n{}", n->start, state());
      KVMEM_CHECK(n->right->prio <= n->prio, "heap order broken at {:#x}", n->start);
    }
    check_node(n->left, count, prev_end, prev, merged);
    Key r(n->start, n->end);
    KVMEM_CHECK(n->start < n->end, "empty or ill-formed segment {}\n{}", r.to_string(), state());
    KVMEM_CHECK(n->start >= *prev_end, "segment {} overlaps or precedes its predecessor\n{}",
                r.to_string(), state());
    KVMEM_CHECK(n->gap_before == n->start - *prev_end,
                "gap index: gap before {} recorded as {:#x}, is {:#x}\n{}", r.to_string(),
                n->gap_before, n->start - *prev_end, state());
    if (merged && *prev && (*prev)->end == n->start) {
      bool mergeable =
          Policy::merge(Key((*prev)->start, (*prev)->end), (*prev)->value, r, n->value)
              .has_value();
      KVMEM_CHECK(!mergeable, "segments {} and {} touch and should have merged\n{}",
                  Key((*prev)->start, (*prev)->end).to_string(), r.to_string(), state());
    }
    *prev_end = n->end;
    *prev = n;
    ++*count;
    check_node(n->right, count, prev_end, prev, merged);
    uint64_t want = std::max({n->gap_before, max_gap_of(n->left), max_gap_of(n->right)});
    KVMEM_CHECK(n->max_gap == want, "gap index: subtree max at {} is {:#x}, should be {:#x}",
                r.to_string(), n->max_gap, want);
  }

  // Removed nodes are kept for reuse, up to kSpareNodes or an eighth of the
  // set, whichever is more: allocate/free churn then rarely reaches malloc.
  static constexpr size_t kSpareNodes = 64;
  Node* new_node() {
    if (Node* n = spare_) {
      spare_ = n->right;
      spare_count_--;
      *n = Node{};
      return n;
    }
    return new Node;
  }
  void free_node(Node* n) {
    if (finger_ == n) finger_ = nullptr;
    if (spare_count_ >= std::max(kSpareNodes, size_ / 8)) {
      delete n;
      return;
    }
    n->value = V{};
    n->right = spare_;
    spare_ = n;
    spare_count_++;
  }
  void free_spares() {
    while (spare_) {
      Node* n = spare_;
      spare_ = n->right;
      delete n;
    }
    spare_count_ = 0;
  }

  static void free_subtree(Node* n) {
    while (n) {
      free_subtree(n->left);
      Node* r = n->right;
      delete n;
      n = r;
    }
  }

  Node* root_ = nullptr;
  size_t size_ = 0;
  Node* spare_ = nullptr;  // free list through right
  size_t spare_count_ = 0;
  uint64_t rng_ = 0x9E3779B97F4A7C15ULL;
  // A node of the set (never a freed one) that find() tries before
  // descending; null when unknown. Only mutators write it. Only a
  // candidate: find checks it against the node's current bounds, so a
  // mutation that moves them cannot mislead.
  Node* finger_ = nullptr;
};

}  // namespace kvmem
