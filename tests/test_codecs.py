"""The codec registry: golden files, round trips for every codec and bit depth it holds, the
decoders' agreement, refusals and damaged payloads."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import load_script

from generator import codecs as formats
from generator.codec import Codec
from generator.codecs import CODECS
from generator.errors import UsageError
from generator.spec import Spec
from generator.synth import make_sample

GOLDEN = Path(__file__).parent / "golden" / "codecs"
golden = load_script(GOLDEN / "make_codecs.py")

INDEX = json.loads((GOLDEN / "index.json").read_text())
REGENERATE = "python tests/golden/codecs/make_codecs.py"


def _needs(spec: Spec):
    why = CODECS[formats.codec_id(spec.payload, spec.compression)].missing(spec.dtype, spec.channels)
    if why:
        pytest.skip(why)


def test_every_codec_has_a_golden_file_per_bit_depth_it_holds():
    held = {(c.id, d) for c in CODECS.values() for d in c.dtypes}
    have = {(formats.codec_id(e["spec"]["payload"], e["spec"].get("compression", "none")), e["spec"]["dtype"])
            for e in INDEX.values()}
    assert held <= have, f"no golden file for {sorted(held - have)}: add a case to {REGENERATE}"
    assert set(INDEX) == set(golden.CASES)


@pytest.mark.parametrize("name", sorted(golden.CASES))
def test_todays_decoder_reads_the_golden_file(name):
    spec = golden.spec_of(name)
    _needs(spec)
    data = golden.path_of(name).read_bytes()
    assert zlib.crc32(data) == INDEX[name]["payload_crc32"], f"{golden.path_of(name)} was changed"
    img = Codec(spec).decode(data)
    assert img.shape == spec.shape and img.dtype == spec.np_dtype
    assert zlib.crc32(np.ascontiguousarray(img).tobytes()) == INDEX[name]["pixels_crc32"], (
        f"today's {name} decoder gives other pixels than when {golden.path_of(name).name} was written")
    if not Codec(spec).lossy:
        assert np.array_equal(img, make_sample(spec, 0)[0])


@pytest.mark.parametrize("name", sorted(golden.CASES))
def test_todays_encoder_writes_the_golden_file_again(name):
    spec = golden.spec_of(name)
    _needs(spec)
    got = bytes(Codec(spec).encode(make_sample(spec, 0)[0]))
    assert got == golden.path_of(name).read_bytes(), (
        f"the {name} encoder writes other bytes than the committed golden file: if deliberate (a new library "
        f"version or setting), regenerate with {REGENERATE} and say so in the commit")


def _every_held():
    for info in CODECS.values():
        for dtype in info.dtypes:
            for channels in info.channels:
                payload, _, compression = info.id.partition("-")
                yield pytest.param(payload, compression or "none", dtype, channels,
                                   id=f"{info.id}-{dtype}-c{channels}")


@pytest.mark.parametrize("payload,compression,dtype,channels", list(_every_held()))
@pytest.mark.parametrize("content", ["photo", "noise"])
def test_round_trip_of_every_codec_and_bit_depth(payload, compression, dtype, channels, content):
    spec = Spec(height=13, width=17, channels=channels, dtype=dtype, count=4, seed=5, content=content,
                payload=payload, compression=compression)
    _needs(spec)
    codec = Codec(spec)
    for i in range(spec.count):
        pixels = make_sample(spec, i)[0]
        payload_bytes = bytes(codec.encode(pixels))
        assert bytes(codec.encode(pixels)) == payload_bytes  # deterministic
        assert formats.sniff(payload_bytes) == (None if payload == "raw" else payload)
        img = codec.decode(payload_bytes)
        assert img.shape == spec.shape and img.dtype == spec.np_dtype
        if codec.lossy:  # the payload is what is bit-exact; its pixels are a function of it
            assert np.array_equal(img, codec.decode(payload_bytes))
            assert np.array_equal(codec.reference(pixels)[1], img)
            err = np.abs(img.astype(np.int32) - pixels).mean()
            assert err < (60 if content == "noise" else 15)  # noise: chroma subsampling loses most, f"mean error {err:.1f}: not a faithful lossy codec"
        else:
            assert np.array_equal(img, pixels)


@pytest.mark.parametrize("dtype,channels", [("uint8", 1), ("uint8", 3), ("uint8", 4), ("uint16", 1),
                                            ("uint16", 3), ("uint16", 4)])
def test_png_decoders_agree_and_read_what_pillow_and_others_write(dtype, channels):
    spec = Spec(height=11, width=19, channels=channels, dtype=dtype, content="photo", payload="png")
    pixels = make_sample(spec, 0)[0]
    ours = formats.encode_png(pixels)
    decoders = ["pillow"] + (["pyspng"] if formats.have("pyspng") else [])
    for d in decoders:
        if d == "pillow" and dtype == "uint16" and channels > 1 and not formats.have("imagecodecs"):
            with pytest.raises(ValueError, match="needs pyspng or imagecodecs"):
                formats.decode_png(ours, channels, spec.np_dtype, d)
            continue
        assert np.array_equal(formats.decode_png(ours, channels, spec.np_dtype, d), pixels), d
    from PIL import Image

    if dtype == "uint8":  # a PNG written by Pillow (libpng-style, its own filters) decodes the same
        buf = io.BytesIO()
        Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(buf, "PNG")
        for d in decoders:
            assert np.array_equal(formats.decode_png(buf.getvalue(), channels, spec.np_dtype, d), pixels)
    with Image.open(io.BytesIO(ours)) as im:  # and ours opens in Pillow
        assert im.size == (19, 11)


@pytest.mark.skipif(not formats.have("simplejpeg"), reason="simplejpeg not installed (the codecs extra)")
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_decoders_give_identical_pixels(channels):
    spec = Spec(height=37, width=41, channels=channels, content="photo", payload="jpeg", quality=90, count=3)
    data = Codec(spec).encode(make_sample(spec, 2)[0])
    a = formats.decode_jpeg(data, channels, spec.np_dtype, "pillow")
    b = formats.decode_jpeg(data, channels, spec.np_dtype, "simplejpeg")
    assert np.array_equal(a, b)


def test_quality_changes_the_bytes_and_the_error():
    sizes, errs = [], []
    for q in (30, 60, 95):
        spec = Spec(height=64, width=64, channels=3, content="photo", payload="jpeg", quality=q)
        pixels = make_sample(spec, 0)[0]
        payload, img = Codec(spec).reference(pixels)
        sizes.append(len(payload))
        errs.append(np.abs(img.astype(int) - pixels).mean())
    assert sizes == sorted(sizes) and errs == sorted(errs, reverse=True)


@pytest.mark.parametrize("payload", ["jpeg", "webp"])
def test_lossy_codecs_refuse_16_bit_naming_the_codecs_that_hold_it(payload):
    with pytest.raises(UsageError) as e:
        Spec(height=4, width=4, channels=3, dtype="uint16", payload=payload)
    msg = str(e.value)
    assert f"{payload} holds uint8" in msg and "png" in msg and "tiff" in msg and "\n" not in msg


def test_settings_that_do_not_apply_are_refused():
    with pytest.raises(UsageError, match="--quality applies to lossy"):
        Spec(height=4, width=4, channels=3, payload="png", quality=50)
    with pytest.raises(UsageError, match="TIFF payloads only"):
        Spec(height=4, width=4, channels=3, payload="jpeg", compression="deflate")
    with pytest.raises(UsageError, match="1..100"):
        Spec(height=4, width=4, channels=3, payload="jpeg", quality=0)
    with pytest.raises(UsageError, match="jpeg holds 1/3 channels"):
        Spec(height=4, width=4, channels=4, payload="jpeg")
    assert Spec(height=4, width=4, channels=3, payload="webp").quality == 90


def test_a_spec_without_the_new_fields_keeps_its_json():
    spec = Spec(height=4, width=4, channels=3)
    assert "quality" not in spec.to_dict() and Spec.from_dict(spec.to_dict()) == spec
    lossy = Spec(height=4, width=4, channels=3, payload="jpeg", quality=70)
    assert lossy.to_dict()["quality"] == 70 and Spec.from_dict(lossy.to_dict()) == lossy


def test_uncompressed_tiff_keeps_its_fixed_header_and_in_place_view():
    spec = Spec(height=8, width=8, channels=3)
    codec = Codec(spec)
    assert codec.fixed_size == len(codec.header) + spec.pixel_bytes and codec.header[:4] == b"II*\x00"
    payload = codec.encode(make_sample(spec, 0)[0])
    img = codec.decode(payload)
    assert img.base is not None and not img.flags.owndata  # a view, no copy
    for payload_kind in ("png", "jpeg", "webp"):
        assert Codec(Spec(height=8, width=8, channels=3, payload=payload_kind)).fixed_size is None


@pytest.mark.parametrize("name", sorted(golden.CASES))
def test_damaged_payloads_are_one_line_value_errors(name):
    spec = golden.spec_of(name)
    _needs(spec)
    codec = Codec(spec)
    data = golden.path_of(name).read_bytes()
    bad = [data[: len(data) // 2], b"\0" * len(data), data[:8] + bytes(255 - b for b in data[8:])]
    if spec.payload == "raw":
        bad = bad[:1]  # any bytes of the right size are valid raw pixels
    for payload in bad:
        try:
            img = codec.decode(payload)
        except ValueError as exc:
            assert "\n" not in str(exc) and str(exc)
        else:  # a decoder may accept damaged entropy-coded data: never silently as other pixels' shape
            assert img.shape == spec.shape and payload is bad[2]


def test_foreign_tiffs_decode_through_tifffile():
    import tifffile

    spec = Spec(height=9, width=10, channels=3, compression="deflate", count=2)
    pixels = make_sample(spec, 1)[0]
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, compression="zlib", photometric="rgb", rowsperstrip=3)
    assert np.array_equal(Codec(spec).decode(buf.getvalue()), pixels)


def test_missing_codec_library_is_one_line(monkeypatch):
    from generator import libraries

    real = libraries.problem
    monkeypatch.setattr(libraries, "problem", lambda m: "imagecodecs is not installed" if m == "imagecodecs" else real(m))
    spec = Spec(height=4, width=4, channels=3, compression="zstd")
    with pytest.raises(UsageError, match=r"needs imagecodecs, which is not installed: pip install -e '\.\[codecs\]'"):
        Codec(spec)


def test_cli_refuses_and_lists_in_one_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "generator", *args], capture_output=True, text=True, timeout=60)

    r = run("--shape", "8x8x3", "--dtype", "uint16", "--payload", "jpeg", "--count", "2", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "png" in r.stderr, r.stderr
    r = run("--list-codecs")
    assert r.returncode == 0 and all(c in r.stdout for c in CODECS)
    out = tmp_path / "j"
    r = run("--shape", "20x24x3", "--payload", "jpeg", "--quality", "80", "--count", "5", "--out", str(out),
            "--layouts", "files", "--quiet", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert sorted(p.suffix for p in (out / "files").rglob("*.*")) == [".jpg"] * 5
    v = subprocess.run([sys.executable, "-m", "loaders", "verify", str(out), "--quiet"], capture_output=True,
                       text=True, timeout=60)
    assert v.returncode == 0 and "all 5 samples match" in v.stdout, v.stdout + v.stderr
