"""The codec block: layout, vocabulary version, parsing, and one-line errors."""

import numpy as np
import pandas as pd
import pytest

from engine.codec import (
    CODEC_VOCABULARY_VERSION,
    codec_block,
    codec_vocabulary,
    encode_codec,
    parse_param,
)
from engine.errors import FeatureCacheError, UsageError
from engine.features import features_from_frame
from tests.engine.tables import small_frame


def test_vocabulary_v1_layout_is_six_columns_in_documented_order() -> None:
    vocab = codec_vocabulary(1)
    assert CODEC_VOCABULARY_VERSION == 1
    assert vocab.width == 6
    assert vocab.columns == (
        "encoder=libx264",
        "encoder=libx265",
        "encoder=libsvtav1",
        "encoder=other",
        "preset_norm",
        "crf_norm",
    )


def test_unknown_vocabulary_version_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown codec vocabulary version 99"):
        codec_vocabulary(99)


def test_block_values_for_named_numeric_and_unknown_encoders() -> None:
    block = encode_codec(
        ["libx264", "libsvtav1", "h264_nvenc", " LIBX265 "],
        [
            "crf=28,preset=medium",
            "crf=63,preset=8",
            "crf=0,preset=placebo",
            "preset=ultrafast,crf=31.5",
        ],
    )
    assert block.dtype == np.float32
    np.testing.assert_array_equal(block[:, :4], np.eye(4, dtype=np.float32)[[0, 2, 3, 1]])
    np.testing.assert_allclose(block[:, 4], [5 / 9, 5 / 13, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(block[:, 5], [28 / 63, 1.0, 0.0, 31.5 / 63], rtol=1e-6)


def test_golden_cache_builds_a_block_with_every_row_one_hot() -> None:
    table = features_from_frame(small_frame(sources=9, step=16))
    block = codec_block(table)
    assert block.shape == (table.n_rows, 6)
    np.testing.assert_array_equal(block[:, :4].sum(axis=1), 1.0)
    assert block[:, 3].sum() == 0  # only the three known encoders in the golden cache
    assert ((block[:, 4:] >= 0) & (block[:, 4:] <= 1)).all()


@pytest.mark.parametrize("missing", [["param"], ["encoder", "param"]])
def test_cache_without_encode_columns_cannot_build_the_block(missing: list[str]) -> None:
    table = features_from_frame(small_frame().drop(columns=missing))
    with pytest.raises(FeatureCacheError) as caught:
        codec_block(table)
    message = str(caught.value)
    assert "\n" not in message
    assert "codec block needs the columns 'encoder' and 'param'" in message
    assert all(f"'{name}'" in message for name in missing)


@pytest.mark.parametrize(
    ("param", "reason"),
    [
        ("crf=abc,preset=medium", "crf 'abc' is not a number"),
        ("crf=28", "no preset"),
        ("preset=fast", "no crf"),
        ("crf=28,preset=warp", "preset 'warp' is neither a preset name"),
        ("crf=70,preset=slow", "crf 70 is outside 0..63"),
        ("crf=20,preset=14", "numeric preset 14 is outside 0..13"),
        ("crf=20,crf=21,preset=slow", "key 'crf' appears twice"),
        ("crf=20,medium", "'medium' is not key=value"),
    ],
)
def test_unparseable_param_is_one_line_error_naming_the_row(param: str, reason: str) -> None:
    frame = small_frame()
    frame["param"] = frame["param"].astype(object)
    frame.loc[17, "param"] = param
    table = features_from_frame(frame)
    with pytest.raises(FeatureCacheError) as caught:
        codec_block(table)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("feature table: row 17: cannot read param")
    assert reason in message


def test_missing_param_value_names_the_row() -> None:
    frame = small_frame()
    frame["param"] = pd.Series(frame["param"].astype(object))
    frame.loc[5, "param"] = None
    with pytest.raises(FeatureCacheError, match="row 5: column 'param' has no value"):
        codec_block(features_from_frame(frame))


def test_parse_param_ignores_other_keys_and_whitespace() -> None:
    settings = parse_param(" crf = 23 , preset = Slow , tune=film ")
    assert settings.crf == 23.0
    assert settings.preset == "Slow"
