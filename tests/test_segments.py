"""Who spoke when (srpl_cli.segments, clustering, rttm): unit checks, then real recordings stitched at
test time from ../shared clips (d-vector backbone, real weights, offline)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from srpl_cli import segments as seg_mod
from srpl_cli.clustering import cluster_segments, same_speaker_threshold
from srpl_cli.rttm import format_rttm
from srpl_cli.segments import Segment, SegmentParams, identify_segments, viterbi, window_bounds
from tests.conftest import shared_path

SR = 16000


# ---------------------------------------------------------------- pieces
def test_window_bounds_cover_the_region_and_end_on_it():
    w = window_bounds(100, 100 + 5 * SR, int(1.6 * SR), int(0.8 * SR))
    assert w[0][0] == 100 and w[-1][1] == 100 + 5 * SR
    assert all(b - a == int(1.6 * SR) for a, b in w)
    assert window_bounds(0, 1000, 25600, 12800) == [(0, 1000)]  # short region: one window, itself


def test_viterbi_penalty_removes_blips_and_pauses_allow_changes():
    E = np.zeros((9, 3))
    E[:, 0] = 1.0
    E[4] = [0.0, 1.5, 0.0]  # one odd window
    assert viterbi(E, np.zeros(8)).tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]  # no penalty: argmax
    assert viterbi(E, np.full(8, 2.0)).tolist() == [0] * 9
    E[5:] = [0.0, 1.0, 0.0]
    cost = np.full(8, 5.0)
    cost[3] = 0.0  # a pause between windows 3 and 4: changing there is free
    assert viterbi(E, cost).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_clustering_stops_at_the_threshold_and_numbers_by_appearance():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(32), rng.standard_normal(32)
    X = np.stack(
        [b + 0.1 * rng.standard_normal(32) for _ in range(3)] + [a + 0.1 * rng.standard_normal(32)] * 2
    )
    labels = cluster_segments(X, [3.0] * 5, threshold=0.8)
    assert labels.tolist() == [0, 0, 0, 1, 1]
    assert cluster_segments(X, [3.0] * 5, threshold=-1.0).tolist() == [0] * 5  # merge everything
    # a short scrap founds nothing: it joins the nearest group
    short = np.concatenate([X, [a + 0.3 * rng.standard_normal(32)]])
    assert cluster_segments(short, [3.0] * 5 + [0.4], threshold=0.8).tolist() == [0, 0, 0, 1, 1, 1]
    assert cluster_segments(np.zeros((0, 4)), [], 0.5).tolist() == []


def test_same_speaker_threshold_separates_the_pairs():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 16))
    groups = {f"s{i}": c + 0.3 * rng.standard_normal((4, 16)) for i, c in enumerate(centres)}
    t = same_speaker_threshold(groups)
    n = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in groups.items()}
    same = min(float((v @ v.T)[np.triu_indices(4, 1)].min()) for v in n.values())
    diff = max(float((n["s0"] @ n[k].T).max()) for k in ("s1", "s2"))
    assert diff < t < same
    assert same_speaker_threshold({"only": groups["s0"]}) == seg_mod.FALLBACK_THRESHOLD


def test_rttm_round_trips_through_pyannote(tmp_path):
    load_rttm = pytest.importorskip("pyannote.database.util").load_rttm
    turns = [(0.5, 3.25, "alice"), (4.0, 9.5, "unknown-1"), (10.0, 12.0, "bob smith")]
    path = tmp_path / "m.rttm"
    path.write_text(format_rttm("my meeting", turns))
    ann = load_rttm(str(path))["my_meeting"]
    got = sorted(
        (round(s.start, 3), round(s.end, 3), label) for s, _, label in ann.itertracks(yield_label=True)
    )
    assert got == [(0.5, 3.25, "alice"), (4.0, 9.5, "unknown-1"), (10.0, 12.0, "bob_smith")]


def test_params_are_checked():
    from srpl_cli.errors import UsageError

    with pytest.raises(UsageError):
        SegmentParams(hop_s=3.0, window_s=1.6).check()
    with pytest.raises(UsageError):
        SegmentParams(switch_penalty=-1).check()


def test_timeline_png(tmp_path):
    pytest.importorskip("matplotlib")
    from srpl_cli.plots import plot_timeline

    png = plot_timeline(
        [(0, 3, "alice"), (3.5, 7, "unknown-1"), (8, 90, "bob")],
        tmp_path / "t.png",
        speakers=["alice", "bob", "carol"],
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- real recordings
def _clips(speaker_dir, idx):
    from srpl_cli.audio import load_audio

    files = sorted(speaker_dir.glob("*.flac"))
    return [load_audio(files[i]) for i in idx]


def stitch(path, parts, pause_s=1.5, seed=0):
    """Write ``parts`` [(label, wave)] with pauses of low noise; returns [(start, end, label)]."""
    rng = np.random.default_rng(seed)
    gap = (rng.standard_normal(int(pause_s * SR)) * 1e-3).astype(np.float32)
    out, turns, t = [gap], [], len(gap)
    for label, w in parts:
        out += [w, gap]
        turns.append((t / SR, (t + len(w)) / SR, label))
        t += len(w) + len(gap)
    sf.write(str(path), np.concatenate(out), SR, subtype="PCM_16")
    return turns


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A d-vector model tuned on 4 librispeech-mini speakers (3 clips each); the other 6 are strangers."""
    from srpl_cli import pipeline
    from srpl_cli.workspace import Workspace

    speakers = shared_path("librispeech-mini", "speakers")
    dirs = sorted(p for p in speakers.iterdir() if p.is_dir())
    root = tmp_path_factory.mktemp("seg")
    for d in dirs[:4]:
        (root / "enroll" / d.name).mkdir(parents=True)
        for p in sorted(d.glob("*.flac"))[:3]:
            (root / "enroll" / d.name / p.name).symlink_to(p)
    ws = Workspace(root / "ws")
    pipeline.tune(root / "enroll", ws, shots=3, backbone="dvector")
    return ws, dirs, root


def test_single_speaker_one_segment_per_speech_region(tuned, tmp_path):
    ws, dirs, _ = tuned
    rec = tmp_path / "alone.flac"
    stitch(rec, [("a", w) for w in _clips(dirs[0], [5, 6, 7])], pause_s=2.0)
    segmenter = seg_mod.load_segmenter(ws)
    track = seg_mod.embed_windows(rec, segmenter.backbone, SegmentParams())
    result = segmenter(rec)
    assert {s.speaker for s in result.segments} == {dirs[0].name}
    assert [(round(s.start * SR), round(s.end * SR)) for s in result.segments] == [
        tuple(map(int, r)) for r in track.regions
    ]


def test_only_strangers_give_only_unknown_labels(tuned, tmp_path):
    ws, dirs, _ = tuned
    x, y = _clips(dirs[6], [0, 1, 2]), _clips(dirs[8], [0, 1, 2])
    rec = tmp_path / "strangers.wav"
    stitch(rec, [("x", x[0]), ("y", y[0]), ("x", x[1]), ("y", y[1]), ("x", x[2]), ("y", y[2])])
    result = seg_mod.load_segmenter(ws)(rec)
    labels = {s.speaker for s in result.segments}
    assert labels and all(label.startswith("unknown-") for label in labels)
    assert result.segments[0].speaker == "unknown-1"


def test_meeting_names_the_enrolled_and_reads_in_blocks(tuned, tmp_path, monkeypatch):
    ws, dirs, _ = tuned
    a, b, z = _clips(dirs[1], [4, 5]), _clips(dirs[2], [4, 5]), _clips(dirs[7], [0, 1])
    rec = tmp_path / "meeting.flac"
    turns = stitch(rec, [("A", a[0]), ("B", b[0]), ("Z", z[0]), ("A", a[1]), ("Z", z[1]), ("B", b[1])])
    truth = {"A": dirs[1].name, "B": dirs[2].name, "Z": "unknown"}
    segmenter = seg_mod.load_segmenter(ws)
    whole = segmenter(rec)
    monkeypatch.setattr(seg_mod, "BLOCK_S", 7.0)  # speech runs over block ends: carried, not cut
    blocks = identify_segments(
        rec, segmenter.backend, segmenter.backbone, cluster_threshold=segmenter.cluster_threshold
    )
    for result in (whole, blocks):
        for t0, t1, who in turns:
            inside = [s for s in result.segments if s.start < t1 and s.end > t0]
            talk = {}
            for s in inside:
                key = "unknown" if s.is_unknown else s.speaker
                talk[key] = talk.get(key, 0.0) + min(s.end, t1) - max(s.start, t0)
            assert max(talk, key=talk.get) == truth[who], (who, talk)
    assert abs(whole.speech_s - blocks.speech_s) < 0.05 * whole.speech_s


def test_window_cache_gives_the_same_answer(tuned, tmp_path):
    ws, dirs, _ = tuned
    rec = tmp_path / "r.flac"
    stitch(rec, [("a", w) for w in _clips(dirs[3], [5, 6])])
    segmenter = seg_mod.load_segmenter(ws)
    first, second = segmenter(rec), segmenter(rec)
    assert [s.to_dict() for s in first.segments] == [s.to_dict() for s in second.segments]
    assert list((ws.cache_dir / "segments").rglob("*.npz"))
    assert isinstance(first.segments[0], Segment)


def test_any_method_gives_the_same_kind_of_answer(tuned, tmp_path):
    """Only decision_function / threshold_ / classes_ are used: a plain cosine model works the same way."""
    from srpl_cli import pipeline

    ws, dirs, root = tuned
    pipeline.tune(root / "enroll", ws, shots=3, backbone="dvector", method="cosine", model_name="cos")
    rec = tmp_path / "two.flac"
    stitch(rec, [("a", _clips(dirs[0], [6])[0]), ("z", _clips(dirs[9], [3])[0])])
    result = seg_mod.load_segmenter(ws, "cos")(rec)
    said = [s.speaker for s in result.segments]
    assert said[0] == dirs[0].name and said[-1] == "unknown-1"


def test_cli_help_states_the_real_defaults():
    import inspect

    from srpl_cli.cli import identify as cli_identify

    src = inspect.getsource(cli_identify)
    d = SegmentParams()
    for text in (f"(default {d.window_s:g})", f"(default {d.hop_s:g})", f"(default {d.switch_penalty:g};"):
        assert text in src
