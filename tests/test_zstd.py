"""``compression = "zstd"``: the same bytes however the pipeline batches its input, the
right extension and Content-Encoding end to end through ``sync`` into moto's S3 and the
``local`` sink, and ``verify --deep`` reading the objects back (and finding a bad one)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import zstandard

from siem_plugins.compress import DEFAULT_ZSTD_LEVEL, compressor, encoding_of
from siem_plugins.config import load_config
from siem_plugins.options import ConfigError
from siem_plugins.verify.content import Unreadable, decoded
from tests.helpers import ingest, numbered
from tests.test_verify import PREFIX, S3Setup, Setup
from tests.test_verify import s3 as s3  # the fixture

LINES = b"".join(
    b'{"id":%d,"log_type":"login","user":"u%05d@example.com","device":"d-%x"}\n'
    % (i, (i * 7919) % 100_000, (i * 104_729) % 0xFFFFFF)
    for i in range(120_000)
)  # ~8 MB: more than libzstd's window at level 3, so blocks and matches span calls


def compress(data: bytes, sizes: random.Random | int, level: int | None = None) -> bytes:
    comp = compressor("zstd", level)
    out, pos = [], 0
    while pos < len(data):
        n = sizes if isinstance(sizes, int) else sizes.randint(1, 3 << 20)
        out.append(comp.compress(data[pos : pos + n]))
        pos += n
    out.append(comp.flush())
    return b"".join(out)


@pytest.mark.parametrize("level", [1, DEFAULT_ZSTD_LEVEL, 19])
def test_the_same_input_gives_the_same_bytes_however_it_is_cut(level: int) -> None:
    data = LINES if level != 19 else LINES[: 1 << 20]  # level 19 is slow
    whole = compress(data, len(data), level)
    for cut in [*(random.Random(seed) for seed in range(4)), 4096, 131_072, 5 << 20]:
        assert compress(data, cut, level) == whole
    assert compress(data[:5000], 1, level) == compress(data[:5000], 5000, level)  # byte by byte
    assert zstandard.ZstdDecompressor().decompressobj().decompress(whole) == data
    params = zstandard.get_frame_parameters(whole)
    assert params.has_checksum and params.content_size == zstandard.CONTENTSIZE_UNKNOWN


def test_reading_back_finds_truncation_trailing_bytes_and_corruption() -> None:
    frame = compress(LINES, 1 << 20)

    def read(data: bytes, size: int = 65_536) -> bytes:
        return b"".join(
            decoded(iter(data[i : i + size] for i in range(0, len(data), size)), "zstd")
        )

    assert read(frame) == LINES == read(frame, 7_000_001)
    assert max(len(c) for c in decoded(iter([frame]), "zstd")) <= 1 << 20
    bad = bytearray(frame)
    bad[len(frame) // 2] ^= 0x55
    for data, message in [
        (frame[:-2], "the zstd stream is truncated"),
        (frame + b"x", "bytes after the end of the zstd frame"),
        (frame + frame, "bytes after the end of the zstd frame"),
        (bytes(bad), "not valid zstd"),
        (b"not zstd at all", "not valid zstd"),
    ]:
        with pytest.raises(Unreadable, match=message):
            read(data)
    assert encoding_of("a/b.json.zst") == "zstd" and encoding_of("a/b.log.gz") == "gzip"
    assert encoding_of("a/b.json") is None


@pytest.mark.parametrize(
    ("compression", "level", "message"),
    [
        ("zstd", 0, "must be 1-19 for zstd, got 0"),
        ("zstd", 20, "must be 1-19 for zstd, got 20"),
        ("gzip", 4, "must be 0-3 for gzip, got 4"),
        ("lz4", None, "unknown value 'lz4'; choose one of: gzip, zstd, none"),
    ],
)
def test_the_level_is_checked_for_its_compression(
    tmp_path: Path, compression: str, level: int | None, message: str
) -> None:
    setup = Setup(tmp_path)
    extra: dict[str, Any] = {"compression": compression}
    if level is not None:
        extra["compression_level"] = level
    setup.add("acme", {"type": "local", "path": str(tmp_path / "b")}, **extra)
    key = "compression_level" if level is not None else "compression"
    with pytest.raises(ConfigError) as caught:
        load_config(setup.cfg)
    assert caught.value.located() == f"{setup.cfg}: integration[0].{key}: {message}"


def test_zstd_objects_in_s3_verify_clean_and_a_bad_one_is_found(s3: S3Setup) -> None:
    s3.add(
        "acme-zstd",
        s3.server.sink_options(s3.bucket, prefix=PREFIX),
        compression="zstd",
        compression_level=9,
    )
    s3.sync()
    zst = s3.keys(".json.zst")
    gz = s3.keys(".json.gz")
    assert sorted(zst) == sorted(gz) == [(1, 100), (101, 200), (251, 350), (351, 450), (451, 500)]
    for span, key in zst.items():
        got = s3.client.get_object(Bucket=s3.bucket, Key=key)
        assert got["ContentEncoding"] == "zstd"
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(got["Body"].read())
        assert plain == s3.body(gz[span])  # the same content as the gzip integration's
    for deep in ((), ("--deep",)):
        reports = s3.verify(*deep, status=0)
        assert reports["acme-zstd"]["findings"] == []
        assert reports["acme-zstd"]["objects"] == 5

    # The middle object's content changed (a valid zstd frame): found and located.
    key = zst[(101, 200)]
    head = s3.client.head_object(Bucket=s3.bucket, Key=key)
    lines = s3.body(gz[(101, 200)]).splitlines(keepends=True)
    lines[4] = lines[4].replace(b'"', b"'", 1)
    s3.client.put_object(
        Bucket=s3.bucket,
        Key=key,
        Body=zstandard.ZstdCompressor().compress(b"".join(lines)),
        ContentType=head["ContentType"],
        ContentEncoding="zstd",
        Metadata=head["Metadata"],
    )
    (found,) = s3.verify("--deep")["acme-zstd"]["findings"]
    assert found["kind"] == "content" and "(line 5, event 105)" in found["message"]


def test_zstd_in_the_local_sink(tmp_path: Path, siem_events: Any) -> None:
    setup = Setup(tmp_path)
    ingest(setup.store, "acme", numbered(siem_events(250)))
    setup.add("acme", {"type": "local", "path": str(tmp_path / "bucket")}, compression="zstd")
    setup.sync()
    files = sorted((tmp_path / "bucket" / "acme").rglob("*"))
    files = [f for f in files if f.is_file()]
    assert len(files) == 3 and all(f.name.endswith(".json.zst") for f in files)
    for deep in ((), ("--deep",)):
        r = setup.verify(*deep, status=0)["acme"]
        assert r["findings"] == [] and r["objects"] == 3
    files[1].write_bytes(files[1].read_bytes()[:-4])  # truncated: the checksum is gone
    (found,) = setup.verify("--deep")["acme"]["findings"]
    assert "truncated" in found["message"]
