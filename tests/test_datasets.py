from __future__ import annotations

import numpy as np
import pytest
import torch

from srpl_cli.datasets import (
    collect_audio,
    load_embedding_file,
    parse_speaker_range,
    read_embedding_dataset,
    read_speaker_folders,
)
from srpl_cli.errors import DataError
from tests.conftest import shared_path


def _make_dataset(root, torch_pickle=False, dim=8):
    rng = np.random.default_rng(0)
    for split, speakers in (("emb_train", [0, 1, 2]), ("emb_test", [0, 1, 2, 40, 41])):
        for s in speakers:
            d = root / split / str(s)
            d.mkdir(parents=True)
            for n in range(12):
                arr = rng.normal(size=(1, dim)).astype(np.float32)
                if torch_pickle:
                    torch.save(arr, d / f"{n}.npy")
                else:
                    np.save(d / f"{n}.npy", arr)


@pytest.mark.parametrize("torch_pickle", [False, True])
def test_read_embedding_dataset_both_formats(tmp_path, torch_pickle):
    _make_dataset(tmp_path, torch_pickle)
    splits = read_embedding_dataset(tmp_path)
    assert set(splits) == {"emb_train", "emb_test"}
    test = splits["emb_test"]
    assert test.X.shape == (60, 8) and test.X.dtype == np.float32
    assert test.speakers() == [0, 1, 2, 40, 41]
    # numeric file order within a speaker: 0, 1, ..., 10, 11 (not 0, 1, 10, 11, 2)
    first = [p.stem for p, s in zip(test.paths, test.y) if s == 0]
    assert [int(x) for x in first] == sorted(int(x) for x in first)


def test_torch_pickle_needing_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "0.npy")
    with pytest.raises(DataError):
        load_embedding_file(tmp_path / "0.npy")


def test_not_an_array(tmp_path):
    (tmp_path / "0.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a numpy"):
        load_embedding_file(tmp_path / "0.npy")


def test_wrong_layout(tmp_path):
    with pytest.raises(DataError, match="not an embedding dataset"):
        read_embedding_dataset(tmp_path)
    (tmp_path / "emb_test" / "alice").mkdir(parents=True)
    with pytest.raises(DataError, match="integers"):
        read_embedding_dataset(tmp_path)


def test_real_qspeech_files_load():
    root = shared_path("qspeech-wavlm")
    splits = read_embedding_dataset(root)
    assert splits["emb_test"].X.shape == (661, 512)
    assert splits["emb_test"].speakers() == list(range(5)) + list(range(40, 50))


def test_speaker_range():
    assert parse_speaker_range("0-4") == [0, 1, 2, 3, 4]
    assert parse_speaker_range("0,2,5-7") == [0, 2, 5, 6, 7]
    with pytest.raises(DataError):
        parse_speaker_range("a-b")


def test_speaker_folders_and_manifest(tmp_path):
    for spk in ("alice", "bob"):
        (tmp_path / spk).mkdir()
        for i in range(3):
            (tmp_path / spk / f"{i}.wav").write_bytes(b"")
    (tmp_path / "bob" / "notes.txt").write_text("x")
    speakers = read_speaker_folders(tmp_path)
    assert sorted(speakers) == ["alice", "bob"] and len(speakers["bob"]) == 3
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,speaker\nalice/0.wav,alice\nbob/1.wav,bob\n")
    m = read_speaker_folders(manifest)
    assert m["alice"] == [tmp_path / "alice" / "0.wav"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,who\nx,y\n")
    with pytest.raises(DataError, match="header"):
        read_speaker_folders(bad)


def test_flat_folder_is_explained(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(DataError, match="own folder"):
        read_speaker_folders(tmp_path)
    with pytest.raises(DataError, match="no such"):
        read_speaker_folders(tmp_path / "missing")


def test_collect_audio(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.flac").write_bytes(b"")
    assert collect_audio([tmp_path / "d", tmp_path / "y.wav"]) == [
        tmp_path / "d" / "x.flac",
        tmp_path / "y.wav",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio"):
        collect_audio([tmp_path / "empty"])


def test_manifest_extra_cells_duplicates_conflicts_and_bom(tmp_path):
    m = tmp_path / "m.csv"
    # a row with more cells than the header (csv puts them under None) used to crash with AttributeError
    m.write_text("path,speaker\na.wav,alice,extra\na.wav,alice\nb.wav,bob\n")
    speakers = read_speaker_folders(m)
    # the duplicate row is dropped: a clip listed twice would be its own held-out twin in calibration
    assert speakers == {"alice": [tmp_path / "a.wav"], "bob": [tmp_path / "b.wav"]}
    m.write_text("path,speaker\na.wav,alice\na.wav,bob\n")
    with pytest.raises(DataError, match="both 'alice' and 'bob'"):
        read_speaker_folders(m)
    m.write_bytes(b"\xef\xbb\xbfpath,speaker\na.wav,alice\n")  # Excel's UTF-8 BOM
    assert read_speaker_folders(m) == {"alice": [tmp_path / "a.wav"]}


def test_hidden_files_in_embedding_dataset_are_ignored(tmp_path):
    from srpl_cli.datasets import read_embedding_split

    (tmp_path / "emb_test" / "0").mkdir(parents=True)
    (tmp_path / "emb_test" / ".ipynb_checkpoints").mkdir()  # used to be "folders must be integers"
    np.save(tmp_path / "emb_test" / "0" / "0.npy", np.ones(4, np.float32))
    (tmp_path / "emb_test" / "0" / "._0.npy").write_bytes(b"\x00\x05\x16\x07junk")  # macOS AppleDouble
    split = read_embedding_split(tmp_path, "emb_test")
    assert split.X.shape == (1, 4)


def _speaker_tree(root, layout):
    for spk, names in layout.items():
        (root / spk).mkdir(parents=True)
        for n in names:
            (root / spk / n).write_bytes(b"x")
    return root


def test_speaker_with_only_unsupported_files_fails_unless_allowed(tmp_path, caplog):
    from srpl_cli.datasets import read_speaker_folders

    root = _speaker_tree(tmp_path, {"alice": ["1.wav"], "bob": ["1.m4a", "2.m4a"], "carol": []})
    with pytest.raises(DataError) as info:
        read_speaker_folders(root)
    msg = str(info.value)
    assert "'bob'" in msg and ".m4a" in msg and "'carol'" in msg and "empty folder" in msg
    assert "--allow-missing" in (info.value.hint or "")
    with caplog.at_level("WARNING"):
        got = read_speaker_folders(root, allow_missing=True)
    assert list(got) == ["alice"]
    assert "speaker 'bob' left out" in caplog.text and "speaker 'carol' left out" in caplog.text


def test_unreadable_folders_are_reported(tmp_path, monkeypatch, caplog):
    """(As root nothing is unreadable, so os.scandir is made to fail for chosen folders.)"""
    import os

    from srpl_cli.datasets import collect_audio, read_speaker_folders

    root = _speaker_tree(tmp_path / "e", {"alice": ["1.wav"], "bob": ["1.wav"], "dave": ["1.wav"]})
    (root / "alice" / "more").mkdir()
    (root / "alice" / "more" / "2.wav").write_bytes(b"x")
    real_scandir = os.scandir
    blocked = {str(root / "bob"), str(root / "alice" / "more")}

    def scandir(path="."):
        if os.fspath(path) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"'bob': cannot read .*Permission denied"):
        read_speaker_folders(root)
    with caplog.at_level("WARNING"):
        got = read_speaker_folders(root, allow_missing=True)
    assert sorted(got) == ["alice", "dave"] and got["alice"] == [root / "alice" / "1.wav"]
    assert "more" in caplog.text and "Permission denied" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        found = collect_audio([root])
    assert root / "bob" / "1.wav" not in found and root / "dave" / "1.wav" in found
    assert str(root / "bob") in caplog.text and "skipped" in caplog.text


def test_speakers_differing_only_in_case_are_warned(tmp_path, caplog):
    from srpl_cli.datasets import read_speaker_folders

    root = _speaker_tree(tmp_path, {"alice": ["1.wav"], "Alice": ["2.wav"], "bob": ["1.wav"]})
    with caplog.at_level("WARNING"):
        got = read_speaker_folders(root)
    assert len(got) == 3
    assert "'Alice' and 'alice' differ only in letter case" in caplog.text
