#!/usr/bin/env python3
"""Seed the fuzz corpora with the public reference frames.

Usage: python3 seed_corpus.py [path/to/jt808.jsonl]

Writes corpus/<target>/<frame id> files: the on-wire frame for `splitter`,
`packet` and `json`, and for `batch` a flags byte (bit 0 = 2019 header)
followed by each 0x0704 body. Starting from real frames lets libFuzzer reach
the body decoders within seconds instead of first having to guess a valid
header and XOR check code.
"""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
default = os.path.join(here, "..", "..", "fixtures", "jt808", "frames.jsonl")
if not os.path.exists(default):
    default = os.path.join(here, "..", "..", "..", "shared", "reference-frames", "jt808.jsonl")
source = sys.argv[1] if len(sys.argv) > 1 else default

for target in ("splitter", "packet", "json", "batch", "reassembler"):
    os.makedirs(os.path.join(here, "corpus", target), exist_ok=True)

count = 0
with open(source) as f:
    for line in f:
        if not line.strip():
            continue
        frame = json.loads(line)
        wire = bytes.fromhex(frame["hex"])
        for target in ("splitter", "packet", "json"):
            with open(os.path.join(here, "corpus", target, frame["id"]), "wb") as out:
                out.write(b"\x07\x80" + wire if target == "splitter" else wire)
        logical = bytes.fromhex(frame.get("logical_hex") or "")
        if len(logical) > 13 and logical[0:2] == b"\x07\x04":
            attrs = int.from_bytes(logical[2:4], "big")
            v2019 = bool(attrs & 0x4000)
            header_len = (17 if v2019 else 12) + (4 if attrs & 0x2000 else 0)
            with open(os.path.join(here, "corpus", "batch", frame["id"]), "wb") as out:
                out.write(bytes([1 if v2019 else 0]) + logical[header_len:-1])
        count += 1
print(f"seeded {count} frames from {source}")
