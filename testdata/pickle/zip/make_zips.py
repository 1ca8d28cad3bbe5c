#!/usr/bin/env python3
"""Writes the ZIP test archives in this folder with Python's zipfile.

Run from anywhere: `python3 testdata/pickle/zip/make_zips.py`. The contents
are deterministic and mirrored in crates/pickle/tests/zip.rs (`py_contents`):

* deflated.zip        seekable write: deflated entries with CRC and sizes in
                      the local header (flags 0), plus one stored entry.
* deflated-stream.zip the same entries written to an unseekable stream:
                      flag bit 3, sizes in data descriptors (PK\\x07\\x08).
* zip64-local.zip     the same entries, each opened with force_zip64=True:
                      local headers carry ZIP64 extra fields (sizes 0xFFFFFFFF
                      in the header proper).
"""
import io
import os
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
DATE = (2020, 1, 1, 0, 0, 0)


def contents():
    """(name, bytes, method) for every entry, in archive order."""
    return [
        ("hello.txt", b"hello world\n" * 100, zipfile.ZIP_DEFLATED),
        ("zeros.bin", bytes(65536), zipfile.ZIP_DEFLATED),
        ("pattern.bin", bytes((i * i * 31 + 7) % 251 for i in range(10000)), zipfile.ZIP_DEFLATED),
        ("stored.bin", bytes(range(256)), zipfile.ZIP_STORED),
        ("dir/nested.txt", b"nested file\n", zipfile.ZIP_DEFLATED),
        ("empty.txt", b"", zipfile.ZIP_DEFLATED),
    ]


class Unseekable(io.RawIOBase):
    """A write-only stream without tell/seek, so zipfile uses data descriptors."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


def info(name, method):
    zi = zipfile.ZipInfo(name, date_time=DATE)
    zi.compress_type = method
    return zi


def write_all(zf, force_zip64=False):
    for name, data, method in contents():
        with zf.open(info(name, method), "w", force_zip64=force_zip64) as f:
            f.write(data)


def main():
    with zipfile.ZipFile(os.path.join(HERE, "deflated.zip"), "w") as zf:
        write_all(zf)

    stream = Unseekable()
    with zipfile.ZipFile(stream, "w") as zf:
        write_all(zf)
    with open(os.path.join(HERE, "deflated-stream.zip"), "wb") as f:
        f.write(bytes(stream.buf))

    with zipfile.ZipFile(os.path.join(HERE, "zip64-local.zip"), "w") as zf:
        write_all(zf, force_zip64=True)

    for name in ("deflated.zip", "deflated-stream.zip", "zip64-local.zip"):
        with zipfile.ZipFile(os.path.join(HERE, name)) as zf:
            assert zf.testzip() is None
            for (n, data, method), zi in zip(contents(), zf.infolist()):
                assert zi.filename == n and zf.read(n) == data and zi.compress_type == method
            print(name, [(zi.filename, hex(zi.flag_bits), zi.compress_size, zi.file_size) for zi in zf.infolist()])


if __name__ == "__main__":
    main()
