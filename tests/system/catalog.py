#!/usr/bin/env python3
"""A small synthesized catalog for the guest: DIR/catalog.csv and DIR/images/pNNN.png (plain
PNGs written with zlib, so no imaging library is needed), half shoes, half pants.
    tests/system/catalog.py DIR N"""
import os
import struct
import sys
import zlib


def png(path, width, height, pixel):
    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    lines = ["id,category,image,title"]
    for i in range(n):
        png(os.path.join(out, "images", f"p{i:03}.png"), 40, 48,
            lambda x, y: ((x * 5 + i * 37) % 256, (y * 4 + i * 11) % 256, (i * 53) % 256))
        category = "Apparel & Accessories|Shoes" if i % 2 == 0 else "Apparel & Accessories|Clothing|Pants"
        lines.append(f"p{i:03},{category},images/p{i:03}.png,Product {i}")
    with open(os.path.join(out, "catalog.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
