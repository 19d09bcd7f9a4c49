"""The real-video golden cache: the committed table's self-consistency, manifests, build and check."""

import copy
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from engine.codec import codec_block
from engine.errors import MediaError
from engine.evidence import write_parquet
from engine.features import FEATURES, load_features
from engine.videocache import locate_source, parse_manifest, read_manifest
from engine.vmaf import load_svr_model, predict_vmaf

VIDEOS = Path(__file__).resolve().parents[2] / "testdata" / "videos"
CACHE = VIDEOS / "real"
MANIFEST = VIDEOS / "manifest.json"
# Stored features are libvmaf's 6-decimal log values cast to float32 (relative error
# <= 6e-8) and VMAF is float32 too; through the SVR that moves VMAF by ~1e-4 at most
# (the carphone log shows 1.1e-4), so 1e-3 catches any wrong feature, order or transform
# (a swapped pair of features moves VMAF by whole points).
SVR_TOLERANCE = 1e-3


def test_committed_mos_equals_vmaf_recomputed_from_the_six_stored_features():
    table = load_features(CACHE / "features.parquet")
    predicted = predict_vmaf(table.matrix(), load_svr_model())
    assert np.max(np.abs(predicted - table.target())) < SVR_TOLERANCE
    # Not a flat table: the ladder spans bad to near-transparent quality.
    assert table.target().min() < 20 and table.target().max() > 95


def test_svr_check_fails_when_two_features_are_swapped():
    table = load_features(CACHE / "features.parquet")
    swapped = table.matrix()[:, [0, 1, 2, 3, 5, 4]]  # vif_scale3 <-> motion2
    predicted = predict_vmaf(swapped, load_svr_model())
    assert np.max(np.abs(predicted - table.target())) > 1.0


def test_committed_cache_matches_its_manifest_and_records_provenance():
    recorded = json.loads((CACHE / "cache.json").read_text())
    manifest = read_manifest(MANIFEST)
    assert recorded["manifest"] == json.loads(MANIFEST.read_text())
    provenance = recorded["provenance"]
    assert provenance["libvmaf"] == "2.3.0"
    assert provenance["ffmpeg"].startswith("ffmpeg version 7.0.2")
    assert provenance["sources"] == {s.source_id: s.sha256 for s in manifest.sources}
    for source in manifest.sources:
        for rung in manifest.ladder:
            command = provenance["commands"][f"{source.source_id}__{rung.rung_id}"]
            assert rung.encoder in command and "-threads" in command
    assert len(manifest.sources) >= 10
    assert {s.kind for s in manifest.sources} == {"clip", "animated-photo"}


def test_committed_rows_carry_source_encoder_param_and_frame():
    table = load_features(CACHE / "features.parquet")
    frame = pq.read_table(CACHE / "features.parquet").to_pandas()
    manifest = read_manifest(MANIFEST)
    assert list(frame["source"].unique()) == [s.source_id for s in manifest.sources]
    assert set(frame["encoder"]) == {"libx264", "libx265"}
    per_clip = frame.groupby(["source", "encoder", "param"])["frame"]
    assert per_clip.count().eq(manifest.working.frames).all()
    assert per_clip.apply(lambda f: list(f) == list(range(len(f)))).all()
    block = codec_block(table)  # the codec vocabulary reads every param
    assert block.shape == (table.n_rows, 6)
    assert (CACHE / "features.parquet").stat().st_size < 5 * 1024 * 1024
    assert set(FEATURES) <= set(frame.columns)


def test_installed_sources_match_their_pinned_sha256():
    for source in read_manifest(MANIFEST).sources:
        assert locate_source(source).is_file()


def test_manifest_problems_are_one_line_errors():
    document = json.loads(MANIFEST.read_text())
    parse_manifest(document)
    broken = copy.deepcopy(document)
    broken["sources"][0]["sha256"] = "abc"
    with pytest.raises(MediaError, match="sha256 must be 64"):
        parse_manifest(broken)
    broken = copy.deepcopy(document)
    broken["ladder"].append(broken["ladder"][0])
    with pytest.raises(MediaError, match="duplicate rungs"):
        parse_manifest(broken)
    broken = copy.deepcopy(document)
    broken["ladder"][0]["encoder"] = "libsvtav1"
    with pytest.raises(MediaError, match="encoder in"):
        parse_manifest(broken)
    broken = copy.deepcopy(document)
    del broken["sources"][3]["camera"]
    with pytest.raises(MediaError, match="camera path"):
        parse_manifest(broken)
    with pytest.raises(MediaError, match="schema_version"):
        parse_manifest({"schema_version": 2})


def test_source_with_another_sha256_is_refused_before_encoding(tmp_path, capsys):
    document = json.loads(MANIFEST.read_text())
    document["sources"] = document["sources"][:1]
    document["sources"][0]["sha256"] = "0" * 64
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document))
    code = main(["cache", "build", "--from-videos", str(path), "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert "the manifest pins 000000000000" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "features.parquet").exists()


def _tiny_manifest(tmp_path: Path) -> Path:
    """Two sources (a clip and an animated photo), three rungs, six frames."""
    document = json.loads(MANIFEST.read_text())
    ids = {"carphone", "coffee"}
    document["sources"] = [s for s in document["sources"] if s["id"] in ids]
    document["ladder"] = [
        {"encoder": "libx264", "crf": 30, "preset": "ultrafast"},
        {"encoder": "libx265", "crf": 36, "preset": "medium"},
        {"encoder": "libx264", "crf": 23, "preset": "medium", "downscale": [96, 54]},
    ]
    document["working"]["frames"] = 6
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.slow
def test_build_resumes_and_check_finds_no_drift_then_one_changed_value(tmp_path, capsys):
    manifest, out = _tiny_manifest(tmp_path), tmp_path / "cache"
    argv = ["cache", "build", "--from-videos", str(manifest), "--out", str(out), "--jobs", "2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "[   6/6]" in captured.err
    assert "carphone" in captured.out and "6 clips encoded, 0 reused" in captured.out
    first = pq.read_table(out / "features.parquet")
    assert first.num_rows == 2 * 3 * 6
    predicted = predict_vmaf(load_features(out / "features.parquet").matrix(), load_svr_model())
    assert np.max(np.abs(predicted - first.column("mos").to_numpy())) < SVR_TOLERANCE

    assert main(argv[:-2]) == 0  # resumed: nothing encoded again, same table
    assert "0 clips encoded, 6 reused" in capsys.readouterr().out
    assert pq.read_table(out / "features.parquet").equals(first)

    assert main(["cache", "check", str(out)]) == 0
    assert "no drift" in capsys.readouterr().out
    mos = first.column("mos").to_numpy().copy()
    mos[4] += 0.01
    changed = first.set_column(6, first.schema.field("mos"), [mos])
    write_parquet(out / "features.parquet", changed)
    assert main(["cache", "check", str(out)]) == 1
    assert "column 'mos' differs by up to" in capsys.readouterr().out


def test_failed_encode_is_one_line_and_keeps_the_finished_clips(tmp_path, capsys):
    document = json.loads(_tiny_manifest(tmp_path).read_text())
    document["sources"] = document["sources"][:1]
    document["ladder"] = [
        {"encoder": "libx264", "crf": 30, "preset": "ultrafast"},
        {"encoder": "libx264", "crf": 30, "preset": "nosuchpreset"},
    ]
    manifest, out = tmp_path / "broken.json", tmp_path / "cache"
    manifest.write_text(json.dumps(document))
    code = main(["cache", "build", "--from-videos", str(manifest), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "model-guard: error: ffmpeg failed: x264 [error]: invalid preset" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert [p.name for p in (out / "clips").iterdir()] == ["carphone__libx264-crf30-ultrafast.json"]
    assert not (out / "features.parquet").exists()
