"""labels.csv of a collection folder (ARCHITECTURE.md, contract 4): tolerant reading of hand-written files, atomic safe writes."""

import threading

import pytest

from tests.helpers import save_image, synthetic_rgb
from waste_edge.runtime.collection import (
    LABELS_FILE,
    SKIP,
    CollectionError,
    list_frames,
    read_labels,
    set_labels,
    unlabelled,
    write_labels,
)

CLASSES, NAMES = ["B", "N"], ["biodegradable", "non-biodegradable"]


@pytest.fixture
def folder(tmp_path):
    for i, lab in enumerate("BNBN"):
        save_image(tmp_path / f"2025010{i}-000000-000-cam.jpg", synthetic_rgb(lab, i))
    save_image(tmp_path / "sub dir" / "hand (1).png", synthetic_rgb("N", 9))
    return tmp_path


def names(folder):
    return [f.file for f in list_frames(folder)]


def test_hand_written_file_with_bom_crlf_spaces_comments_case_and_display_names(folder):
    f = names(folder)
    text = (
        "\ufefffile , label\r\n"
        f"  {f[0]} ,  b \r\n"
        "# a comment line\r\n"
        "\r\n"
        f"{f[1]},Non-Biodegradable\r\n"
        f"./{f[2]},SKIP\r\n"
        f"sub dir\\hand (1).png,n\r\n"
    )
    (folder / LABELS_FILE).write_bytes(text.encode("utf-8"))
    lf = read_labels(folder, CLASSES, NAMES)
    assert lf.problems == []
    assert lf.labels == {f[0]: "B", f[1]: "N", f[2]: SKIP, "sub dir/hand (1).png": "N"}
    assert lf.usable() == {f[0]: "B", f[1]: "N", "sub dir/hand (1).png": "N"}
    assert lf.counts() == {"B": 1, "N": 2, SKIP: 1}


def test_unusable_rows_are_reported_with_line_numbers_never_crash(folder):
    f = names(folder)
    (folder / LABELS_FILE).write_text(
        f"{f[0]},cardboard\n{f[1]}\n../outside.jpg,B\n/abs/x.jpg,N\nmissing.jpg,B\n{f[2]},B\n{f[2]},N\n{f[3]},,\n"
    )
    lf = read_labels(folder, CLASSES, NAMES)
    assert lf.labels == {f[2]: "N"}  # the later row wins
    text = "\n".join(lf.problems)
    assert "line 1: unknown label 'cardboard'" in text
    assert "line 2: expected file,label" in text
    assert "line 3: '../outside.jpg' is not a path inside the folder" in text
    assert "line 4:" in text and "line 5: missing.jpg is not in" in text
    assert "line 7:" in text and "later row wins" in text and "line 8:" in text
    assert len(lf.rejected) == 6


def test_no_header_windows_1252_and_absent_file(folder):
    assert read_labels(folder).labels == {}  # no labels.csv yet: nothing labelled, not an error
    f = names(folder)
    (folder / LABELS_FILE).write_bytes(f"{f[0]},B\n{f[1]},N\n".encode() + b"\xe9t\xe9.jpg,B\n")
    lf = read_labels(folder, CLASSES)
    assert lf.labels == {f[0]: "B", f[1]: "N"}
    assert any("Windows-1252" in p for p in lf.problems) and any("\u00e9t\u00e9.jpg is not in" in p for p in lf.problems)


def test_without_classes_any_label_is_kept(folder):
    f = names(folder)
    write_labels(folder, {f[0]: "cardboard"})
    assert read_labels(folder).labels == {f[0]: "cardboard"}


def test_write_is_atomic_and_round_trips(folder):
    f = names(folder)
    path = write_labels(folder, {f[0]: "B", "sub dir/hand (1).png": "N"})
    assert path.read_text() == f"file,label\n{f[0]},B\nsub dir/hand (1).png,N\n"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(CollectionError):
        write_labels(folder, {"../x.jpg": "B"})


def test_set_labels_updates_one_row_and_keeps_hand_written_rows(folder):
    f = names(folder)
    (folder / LABELS_FILE).write_text(f"file,label\n{f[0]},B\n{f[1]},cardboard\n{f[3]},cardboard\n")
    out = set_labels(folder, {f[2]: "biodegradable", f[1]: "N"}, CLASSES, NAMES)
    assert out.labels == {f[0]: "B", f[2]: "B", f[1]: "N"}
    text = (folder / LABELS_FILE).read_text()
    assert f"{f[3]},cardboard" in text  # what a person typed survives a click on the page
    assert f"{f[1]},cardboard" not in text  # ... unless the same file got a deliberate label
    out = set_labels(folder, {f[0]: None}, CLASSES, NAMES)  # remove a label
    assert f[0] not in read_labels(folder, CLASSES).labels
    with pytest.raises(CollectionError, match="unknown label"):
        set_labels(folder, {f[0]: "plastic"}, CLASSES, NAMES)
    with pytest.raises(CollectionError, match="not a file"):
        set_labels(folder, {"nope.jpg": "B"}, CLASSES, NAMES)


def test_concurrent_set_labels_lose_no_update(folder):
    f = names(folder)
    threads = [threading.Thread(target=set_labels, args=(folder, {name: lab}, CLASSES)) for name, lab in zip(f, "BNBNN")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_labels(folder, CLASSES).labels.keys() == set(f)


def test_unlabelled_queue_is_oldest_first(folder):
    f = names(folder)
    write_labels(folder, {f[1]: "N"})
    queue = [q.file for q in unlabelled(folder)]
    assert queue == [x for x in f if x != f[1]] and queue == sorted(queue, key=f.index)
    assert all(q.sidecar is None for q in unlabelled(folder))  # put there by hand: no sidecar
    with pytest.raises(CollectionError):
        list_frames(folder / "absent")
