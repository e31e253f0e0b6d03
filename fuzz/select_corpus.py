#!/usr/bin/env python3
"""Picks a corpus under a byte budget from a libFuzzer merge control file.

For the targets whose minimised corpus is too large to commit whole
(`report_verify`, `gateway_config`: vector-sized reports and configs).
libFuzzer's `-merge=1` keeps every file that adds a feature, smallest
first; keeping only the smallest files then loses most of what the large
ones cover. This is a greedy weighted set cover instead: files are taken by
new features (libFuzzer's FT and COV ids) per byte, until the budget.

    mkdir empty
    ./<target> -merge=1 -max_len=20000 -merge_control_file=ctl.txt empty min
    python3 select_corpus.py ctl.txt <budget KiB> picked
    mkdir final && ./<target> -merge=1 -max_len=20000 final picked

Prints how many files and features it kept.
"""
import heapq
import os
import shutil
import sys


def main() -> None:
    ctl, budget, out = sys.argv[1], int(sys.argv[2]) * 1024, sys.argv[3]
    lines = open(ctl).read().split("\n")
    n = int(lines[0])
    paths = lines[2 : 2 + n]
    feats: dict[int, set[str]] = {}
    for line in lines[2 + n :]:
        p = line.split()
        if not p:
            continue
        if p[0] == "FT":
            feats[int(p[1])] = set(p[2:])
        elif p[0] == "COV":
            feats.setdefault(int(p[1]), set()).update("c" + x for x in p[2:])
    size = {i: max(os.path.getsize(paths[i]), 1) for i in feats}
    # 64 bytes per file for its name and git's bookkeeping.
    heap = [(-len(f) / (size[i] + 64), i) for i, f in feats.items() if f]
    heapq.heapify(heap)
    covered: set[str] = set()
    total = 0
    chosen = []
    while heap:
        _, i = heapq.heappop(heap)
        gain = len(feats[i] - covered)
        if gain == 0:
            continue
        score = -gain / (size[i] + 64)
        if heap and score > heap[0][0]:
            heapq.heappush(heap, (score, i))
            continue
        if total + size[i] > budget:
            continue
        covered |= feats[i]
        total += size[i]
        chosen.append(i)
    everything = set().union(*feats.values()) if feats else set()
    os.makedirs(out, exist_ok=True)
    for i in chosen:
        shutil.copy(paths[i], out)
    print(f"{len(chosen)} files, {total // 1024} KiB, {len(covered)}/{len(everything)} features kept")


if __name__ == "__main__":
    main()
