"""TensorFlow-free TFRecord / tf.train.Example reader and ClickMe preprocessing (harmonized_models.harmonizer)."""
import io
import struct

import google_crc32c
import numpy as np
import pytest
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from PIL import Image

from harmonized_models.harmonizer.clickme import (BLUR_KERNEL_SIZE, BLUR_SIGMA, ClickMeDataset, ClickMeError,
                                                  gaussian_kernel, open_clickme)
from harmonized_models.harmonizer.tfrecord import (TFRecordError, crc32c, crc32c_python, index_records, iter_records,
                                                   parse_example)


# --- test-side writers (independent of the reader) ----------------------------------------------------------------

def _masked(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def write_tfrecord(path, records):
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", _masked(length)) + data + struct.pack("<I", _masked(data)))


def _varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field, payload):  # length-delimited field
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def hand_example(features):
    """tf.train.Example bytes; int lists written UNPACKED (one varint field per value), floats as fixed32 fields."""
    entries = b""
    for key, value in features.items():
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            feature = _ld(1, b"".join(_ld(1, v) for v in value))
        elif isinstance(value, list) and value and isinstance(value[0], float):
            feature = _ld(2, b"".join(_varint(1 << 3 | 5) + struct.pack("<f", v) for v in value))
        else:
            feature = _ld(3, b"".join(_varint(1 << 3 | 0) + _varint(v) for v in value))
        entries += _ld(1, _ld(1, key.encode()) + _ld(2, feature))
    return _ld(1, entries)


def protobuf_example_class():
    """tf.train.Example built from descriptors with Google's protobuf runtime (packed repeated scalars)."""
    fd = descriptor_pb2.FileDescriptorProto(name="example_test.proto", package="tftest", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto

    def message(name, fields, nested=()):
        m = fd.message_type.add(name=name) if not nested else nested
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
        return m

    message("BytesList", [("value", 1, F.TYPE_BYTES, F.LABEL_REPEATED, None)])
    message("FloatList", [("value", 1, F.TYPE_FLOAT, F.LABEL_REPEATED, None)])
    message("Int64List", [("value", 1, F.TYPE_INT64, F.LABEL_REPEATED, None)])
    feature = message("Feature", [("bytes_list", 1, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".tftest.BytesList"),
                                  ("float_list", 2, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".tftest.FloatList"),
                                  ("int64_list", 3, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".tftest.Int64List")])
    feature.oneof_decl.add(name="kind")
    for f in feature.field:
        f.oneof_index = 0
    features = fd.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".tftest.Feature")
    features.field.add(name="feature", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                       type_name=".tftest.Features.FeatureEntry")
    message("Example", [("features", 1, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".tftest.Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tftest.Example"))


def jpeg(array, quality=95):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def clickme_record(rng, label, size=256):
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = (np.stack([np.sin(6 * xx + c) * np.cos(4 * yy) for c in range(3)], -1) * 120 + 128).astype(np.uint8)
    cy, cx = rng.uniform(0.2, 0.8, 2)
    heat = (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)).astype(np.uint8)
    return hand_example({"image": [jpeg(image)], "heatmap": [jpeg(heat)], "label": [label]}), heat


# --- CRC and framing ----------------------------------------------------------------------------------------------

def test_crc32c_known_vectors():
    assert crc32c_python(b"") == 0
    assert crc32c_python(b"123456789") == 0xE3069283
    assert crc32c_python(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c_python(b"\xff" * 32) == 0x62A8AB43
    data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    assert crc32c_python(data) == crc32c(data) == google_crc32c.value(data)


def test_records_round_trip(tmp_path):
    records = [b"", b"a", np.random.default_rng(1).bytes(70000), b"last"]
    path = tmp_path / "x.tfrecords"
    write_tfrecord(path, records)
    assert list(iter_records(path)) == records
    index = index_records(path)
    assert [length for _, length in index] == [len(r) for r in records]
    assert index[0][0] == 12 and index[1][0] == 12 + 0 + 4 + 12


def test_corrupt_crc_names_file_and_record(tmp_path):
    path = tmp_path / "shard-7.tfrecords"
    write_tfrecord(path, [b"first record", b"second record", b"third"])
    raw = bytearray(path.read_bytes())
    second_data = 12 + len(b"first record") + 4 + 12
    raw[second_data + 2] ^= 0xFF  # flip a data byte of record 1
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match=r"shard-7\.tfrecords: record 1 at byte 28: data CRC mismatch"):
        list(iter_records(path))
    raw[second_data + 2] ^= 0xFF
    raw[28 + 9] ^= 0x01  # the length CRC of record 1
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match=r"shard-7\.tfrecords: record 1 at byte 28: length CRC mismatch"):
        index_records(path)
    raw[28 + 9] ^= 0x01
    path.write_bytes(bytes(raw[:-3]))  # truncated last record
    with pytest.raises(TFRecordError, match=r"record 2 .*truncated"):
        index_records(path)


# --- tf.train.Example -----------------------------------------------------------------------------------------------

def test_parse_example_matches_google_protobuf():
    Example = protobuf_example_class()
    msg = Example()
    msg.features.feature["image"].bytes_list.value.extend([b"\x00\xffabc", b""])
    msg.features.feature["scores"].float_list.value.extend([0.5, -2.25, 1e-3])
    msg.features.feature["label"].int64_list.value.extend([7, -3, 2 ** 40])
    msg.features.feature["empty"].int64_list.SetInParent()
    parsed = parse_example(msg.SerializeToString())
    assert parsed["image"] == [b"\x00\xffabc", b""]
    np.testing.assert_array_equal(parsed["scores"], np.array([0.5, -2.25, 1e-3], np.float32))
    assert parsed["label"].tolist() == [7, -3, 2 ** 40]
    assert len(parsed["empty"]) == 0
    # unpacked encodings (hand-written) parse to the same values, and Google's parser agrees
    hand = hand_example({"label": [7, -3, 2 ** 40], "scores": [0.5, -2.25, 1e-3], "image": [b"\x00\xffabc", b""]})
    again = parse_example(hand)
    assert again["label"].tolist() == [7, -3, 2 ** 40] and again["image"] == [b"\x00\xffabc", b""]
    np.testing.assert_array_equal(again["scores"], parsed["scores"])
    check = Example()
    check.ParseFromString(hand)
    assert list(check.features.feature["label"].int64_list.value) == [7, -3, 2 ** 40]


def test_malformed_protobuf_is_a_clear_error():
    with pytest.raises(TFRecordError, match="malformed"):
        parse_example(b"\x0a\x05\x0a\x03")  # declares 5 bytes, has 2


# --- ClickMe preprocessing --------------------------------------------------------------------------------------------

def np_resize_tf_bilinear(x, out):
    """TF2 tf.image.resize(bilinear): half-pixel centres, no antialias (written from TF's definition)."""
    def axis(n_in):
        scale = n_in / out
        src = (np.arange(out) + 0.5) * scale - 0.5
        lo = np.floor(src)
        frac = src - lo
        return np.clip(lo, 0, n_in - 1).astype(int), np.clip(lo + 1, 0, n_in - 1).astype(int), frac
    r0, r1, fr = axis(x.shape[0])
    c0, c1, fc = axis(x.shape[1])
    top = x[r0][:, c0] * (1 - fc) + x[r0][:, c1] * fc
    bottom = x[r1][:, c0] * (1 - fc) + x[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bottom * fr[:, None]


def np_blur(x, size=BLUR_KERNEL_SIZE, sigma=BLUR_SIGMA):
    r = np.arange(size) - size // 2
    k = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    k /= k.sum()
    p = np.pad(x, size // 2)
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = (p[i:i + size, j:j + size] * k).sum()
    return out


def test_gaussian_kernel_is_odd_and_centred():
    k = gaussian_kernel().numpy()
    assert k.shape == (11, 11) and k.sum() == pytest.approx(1.0)
    assert np.unravel_index(k.argmax(), k.shape) == (5, 5)
    np.testing.assert_allclose(k, k[::-1], atol=1e-9)
    np.testing.assert_allclose(k, k[:, ::-1], atol=1e-9)
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(10)


def test_clickme_tfrecords_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    recs = [clickme_record(rng, label) for label in (3, 1, 4)]
    write_tfrecord(tmp_path / "train-10.tfrecords", [recs[2][0]])
    write_tfrecord(tmp_path / "train-2.tfrecords", [recs[0][0], recs[1][0]])
    (tmp_path / "notes.txt").write_text("not a shard")
    source = open_clickme(tmp_path)
    assert [p.name for p in source.shards] == ["train-2.tfrecords", "train-10.tfrecords"]  # natural order
    dataset = ClickMeDataset(source, image_size=224, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert len(dataset) == 3
    image, heatmap, label = dataset[2]
    assert label == 4 and image.shape == (3, 224, 224) and heatmap.shape == (224, 224)
    # independent pipeline: decoded JPEG -> 64 (TF bilinear) -> odd Gaussian blur (zero pad) -> 224
    decoded = np.asarray(Image.open(io.BytesIO(parse_example(recs[2][0])["heatmap"][0])).convert("L"), np.float64)
    want = np_resize_tf_bilinear(np_blur(np_resize_tf_bilinear(decoded, 64)), 224)
    np.testing.assert_allclose(heatmap.numpy(), want, rtol=1e-4, atol=1e-3)
    raw_image = np.asarray(Image.open(io.BytesIO(parse_example(recs[2][0])["image"][0])).convert("RGB"), np.float64)
    want_image = (np.stack([np_resize_tf_bilinear(raw_image[..., c], 224) for c in range(3)]) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(image.numpy(), want_image, atol=1e-4)
    # the map peaks where the click blob was (no half-pixel shift to the top-left)
    flipped_image, flipped_map, _ = dataset.get(2, flip=True)
    torch.testing.assert_close(flipped_map, heatmap.flip(-1))
    torch.testing.assert_close(flipped_image, image.flip(-1))


def test_corrupt_clickme_shard_is_reported(tmp_path):
    rng = np.random.default_rng(1)
    write_tfrecord(tmp_path / "val-0.tfrecords", [clickme_record(rng, 0)[0], clickme_record(rng, 1)[0]])
    raw = bytearray((tmp_path / "val-0.tfrecords").read_bytes())
    raw[-40] ^= 0xFF
    (tmp_path / "val-0.tfrecords").write_bytes(bytes(raw))
    dataset = ClickMeDataset(open_clickme(tmp_path))
    dataset[0]
    with pytest.raises(TFRecordError, match=r"val-0\.tfrecords: record 1 .*data CRC mismatch"):
        dataset[1]
    write_tfrecord(tmp_path / "val-1.tfrecords", [hand_example({"label": [1]})])
    with pytest.raises(ClickMeError, match=r"val-1\.tfrecords: record 0: feature 'image' is missing"):
        ClickMeDataset(open_clickme(tmp_path / "val-1.tfrecords"))[0]


def test_clickme_folder_format(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "maps").mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{name}.png")
    np.save(tmp_path / "maps" / "a.npy", rng.random((40, 48)).astype(np.float32))
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(tmp_path / "maps" / "b.png")
    (tmp_path / "labels.csv").write_text("image,label\na.png,5\nb.png,2\n")
    dataset = ClickMeDataset(open_clickme(tmp_path), image_size=32, map_preprocessing="none")
    image, heatmap, label = dataset[0]
    assert label == 5 and image.shape == (3, 32, 32) and heatmap.shape == (32, 32)
    np.testing.assert_allclose(heatmap.numpy(), np_resize_tf_bilinear(np.load(tmp_path / "maps" / "a.npy"), 32),
                               rtol=1e-5, atol=1e-5)
    assert dataset[1][2] == 2
    (tmp_path / "labels.csv").write_text("image,label\na.png,5\nc.png,1\n")
    with pytest.raises(ClickMeError, match=r"labels.csv line 3: image file .*c.png not found"):
        open_clickme(tmp_path)
    (tmp_path / "maps" / "b.png").unlink()
    (tmp_path / "labels.csv").write_text("image,label\nb.png,1\n")
    with pytest.raises(ClickMeError, match=r"line 2: no map for b.png"):
        open_clickme(tmp_path)
    (tmp_path / "labels.csv").write_text("image,class\na.png,1\n")
    with pytest.raises(ClickMeError, match=r"missing column\(s\) \['label'\]"):
        open_clickme(tmp_path)
    with pytest.raises(ClickMeError, match="no TFRecord shards"):
        open_clickme(tmp_path / "images")
