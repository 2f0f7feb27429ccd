"""The dataset readers of ``mofo cache build`` (:func:`mofo.shared.sources.open_source`): folders of
clips, Something-Something V2 label files and Epic-Kitchens-100 annotation CSVs, written in their
real formats into ``tmp_path``, with and without a data root, and each kind of malformed input.

The readers only look at file names, so empty files stand in for the videos."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mofo.shared.sources import ClipItem, SourceError, open_source

EPIC_HEADER = [
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
]

SSV2_TRAIN = [
    {
        "id": "78687",
        "label": "holding potato next to vicks vaporub bottle",
        "template": "Holding [something] next to [something]",
        "placeholders": ["potato", "vicks vaporub bottle"],
    },
    {
        "id": "42326",
        "label": "spreading margarine onto bread",
        "template": "Spreading [something] onto [something]",
        "placeholders": ["margarine", "bread"],
    },
    {
        "id": "100904",
        "label": "putting pen behind cup",
        "template": "Putting [something] behind [something]",
        "placeholders": ["pen", "cup"],
    },
]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def ssv2_dir(root: Path, entries: list, label: str = "train.json", videos: str | None = None):
    """``root/<label>`` and, when ``videos`` is named, that folder with a ``<id>.webm`` for each
    entry whose id makes a file name."""
    if videos is not None:
        (root / videos).mkdir(parents=True, exist_ok=True)
        for entry in entries:
            video = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(video, str | int) and str(video) and "/" not in str(video):
                touch(root / videos / f"{video}.webm")
    return write_json(root / label, entries)


def epic_row(narration_id: str, start: int, stop: int, **fields: str) -> dict[str, str]:
    participant, video = narration_id.split("_")[0], "_".join(narration_id.split("_")[:2])
    row = {
        "narration_id": narration_id,
        "participant_id": participant,
        "video_id": video,
        "narration_timestamp": "00:00:01.089",
        "start_timestamp": "00:00:00.14",
        "stop_timestamp": "00:00:03.37",
        "start_frame": str(start),
        "stop_frame": str(stop),
        "narration": "open door",
        "verb": "open",
        "verb_class": "3",
        "noun": "door",
        "noun_class": "8",
        "all_nouns": "['door', 'light']",  # commas inside: the csv module quotes the field
        "all_noun_classes": "[8, 113]",
    }
    row.update(fields)
    return row


def write_epic(path: Path, rows: list[dict[str, str]], header: list[str] = EPIC_HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


EPIC_ROWS = [
    epic_row("P01_01_0", 8, 202),
    epic_row("P01_01_1", 262, 370, narration="pick up cup", all_nouns="['cup']"),
    epic_row("P02_03_17", 1, 1),
]


def expect_error(*fragments: str, **kwargs) -> str:
    """``open_source(**kwargs)`` raises a SourceError whose message holds every fragment."""
    with pytest.raises(SourceError) as caught:
        open_source(**kwargs)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- Something-Something V2 -----------------------------------------------------------------------


def test_ssv2_label_file_with_default_videos_folder(tmp_path):
    label = ssv2_dir(tmp_path, SSV2_TRAIN, videos="20bn-something-something-v2")
    dataset = open_source(label)
    assert (dataset.kind, dataset.name) == ("ssv2", "ssv2-train")
    assert dataset.source == label.resolve()
    assert dataset.root == (tmp_path / "20bn-something-something-v2").resolve()
    assert dataset.items == [
        ClipItem("78687", "78687.webm"),
        ClipItem("42326", "42326.webm"),
        ClipItem("100904", "100904.webm"),
    ]
    assert all(item.segment is None for item in dataset.items)


def test_ssv2_videos_folder_named_videos_and_test_split(tmp_path):
    label = ssv2_dir(tmp_path, [{"id": "1420"}, {"id": "7"}], label="test.json", videos="videos")
    dataset = open_source(label)
    assert dataset.name == "ssv2-test"
    assert dataset.root == (tmp_path / "videos").resolve()
    assert [(i.video, i.path) for i in dataset.items] == [("1420", "1420.webm"), ("7", "7.webm")]


def test_ssv2_explicit_videos_folder(tmp_path):
    label = ssv2_dir(tmp_path / "labels", SSV2_TRAIN, label="validation.json")
    elsewhere = tmp_path / "disk2" / "webm"
    elsewhere.mkdir(parents=True)
    dataset = open_source(label, videos=elsewhere)
    assert (dataset.kind, dataset.name, dataset.root) == ("ssv2", "ssv2-validation", elsewhere)
    assert [i.path for i in dataset.items] == ["78687.webm", "42326.webm", "100904.webm"]


def test_ssv2_explicit_videos_folder_that_does_not_exist(tmp_path):
    label = ssv2_dir(tmp_path, SSV2_TRAIN)
    expect_error("--videos", "nope", source=label, videos=tmp_path / "nope")


def test_ssv2_without_a_videos_folder_says_to_pass_videos(tmp_path):
    label = ssv2_dir(tmp_path, SSV2_TRAIN)
    expect_error(str(label), "--videos", "20bn-something-something-v2", source=label)


def test_ssv2_integer_ids_are_strings(tmp_path):
    label = ssv2_dir(tmp_path, [{"id": 78687}, {"id": "42326"}], videos="videos")
    items = open_source(label).items
    assert items == [ClipItem("78687", "78687.webm"), ClipItem("42326", "42326.webm")]
    assert all(isinstance(item.video, str) for item in items)


def test_ssv2_not_json_names_the_file_and_line(tmp_path):
    (tmp_path / "videos").mkdir()
    label = tmp_path / "train.json"
    label.write_text('[\n  {"id": "1"},\n  {"id": "2",,}\n]\n', encoding="utf-8")
    expect_error(str(label), "line 3", "not valid JSON", source=label)


def test_ssv2_not_a_list(tmp_path):
    label = write_json(tmp_path / "train.json", {"78687": {"label": "x"}})
    (tmp_path / "videos").mkdir()
    expect_error(str(label), "JSON list", "dict", source=label)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"label": "no id"}, id="no-id"),
        pytest.param({"id": ""}, id="empty"),
        pytest.param({"id": None}, id="null"),
        pytest.param({"id": 1.5}, id="float"),
        pytest.param({"id": "../escape"}, id="slash"),
        pytest.param("78687", id="not-an-object"),
        pytest.param({"id": True}, id="bool"),
    ],
)
def test_ssv2_entry_without_a_valid_id_names_its_index(tmp_path, bad):
    label = ssv2_dir(tmp_path, [{"id": "1"}, {"id": "2"}, bad], videos="videos")
    expect_error(str(label), "entry 2", '"id"', source=label)


def test_ssv2_duplicate_id(tmp_path):
    label = ssv2_dir(tmp_path, [{"id": "5"}, {"id": "6"}, {"id": 5}], videos="videos")
    expect_error(str(label), "entry 2", "'5'", "twice", source=label)


def test_ssv2_empty_list(tmp_path):
    label = ssv2_dir(tmp_path, [], videos="videos")
    expect_error(str(label), "no clips", source=label)


# -- Epic-Kitchens-100 ----------------------------------------------------------------------------


def test_epic_csv_segments_named_by_narration_id(tmp_path):
    source = write_epic(tmp_path / "EPIC_100_train.csv", EPIC_ROWS)
    dataset = open_source(source)
    assert (dataset.kind, dataset.name) == ("epic", "epic-EPIC_100_train")
    assert dataset.root == tmp_path.resolve()  # the CSV's folder by default
    # No video files: the dataset's own layout.
    door = {"verb": 3, "noun": 8}  # verb_class and noun_class of the rows
    assert dataset.items == [
        ClipItem("P01_01_0", "P01/videos/P01_01.MP4", (7, 202), door),
        ClipItem("P01_01_1", "P01/videos/P01_01.MP4", (261, 370), door),
        ClipItem("P02_03_17", "P02/videos/P02_03.MP4", (0, 1), door),
    ]


def test_epic_csv_is_parsed_with_quoted_fields(tmp_path):
    source = write_epic(tmp_path / "EPIC_100_validation.csv", EPIC_ROWS)
    text = source.read_text()
    assert "\"['door', 'light']\"" in text  # the real format: quoted lists with commas
    assert text.splitlines()[0] == ",".join(EPIC_HEADER)
    assert len(open_source(source).items) == 3


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (["P01/videos/P01_01.MP4", "P01_01.MP4"], "P01/videos/P01_01.MP4"),
        (["P01_01.MP4"], "P01_01.MP4"),
        (["P01/videos/P01_01.mp4"], "P01/videos/P01_01.mp4"),
        (["P01_01.mp4"], "P01_01.mp4"),
        ([], "P01/videos/P01_01.MP4"),
    ],
    ids=["dataset-layout", "flat", "dataset-layout-lower", "flat-lower", "neither"],
)
def test_epic_video_path_follows_the_files_present(tmp_path, present, expected):
    videos = tmp_path / "videos"
    videos.mkdir()
    for rel in present:
        touch(videos / rel)
    source = write_epic(tmp_path / "EPIC_100_train.csv", EPIC_ROWS[:2])
    dataset = open_source(source, videos=videos)
    assert dataset.root == videos.resolve()
    assert [i.path for i in dataset.items] == [expected, expected]


def test_epic_header_missing_a_column(tmp_path):
    header = [c for c in EPIC_HEADER if c != "start_frame"]
    source = write_epic(tmp_path / "EPIC_100_train.csv", EPIC_ROWS, header=header)
    expect_error(str(source), "line 1", "start_frame", source=source)


@pytest.mark.parametrize(
    ("bad", "fragments"),
    [
        (epic_row("P01_01_9", 5, 10, start_frame="abc"), ["'abc'", "whole numbers"]),
        (epic_row("P01_01_9", 5, 10, stop_frame="12.5"), ["'12.5'", "whole numbers"]),
        (epic_row("P01_01_9", 300, 299), ["300..299"]),
        (epic_row("P01_01_9", 0, 10), ["0..10"]),
        (epic_row("P01_01_9", 5, 10, video_id=""), ["video_id", "empty"]),
        (epic_row("P01_01_9", 5, 10, participant_id=" "), ["participant_id", "empty"]),
        (epic_row("P01_01_0", 5, 10), ["'P01_01_0'", "repeats"]),
    ],
    ids=["non-numeric", "fraction", "stop-before-start", "frame-0", "no-video", "no-person", "dup"],
)
def test_epic_malformed_row_names_file_and_csv_line(tmp_path, bad, fragments):
    # Header = line 1, EPIC_ROWS = lines 2-4, a blank line (5) the reader skips, the bad row = 6.
    source = write_epic(tmp_path / "EPIC_100_train.csv", EPIC_ROWS)
    with source.open("a", newline="", encoding="utf-8") as handle:
        handle.write("\r\n")
        csv.DictWriter(handle, fieldnames=EPIC_HEADER).writerow(bad)
    expect_error(str(source), "line 6:", *fragments, source=source)


def test_epic_without_rows(tmp_path):
    source = write_epic(tmp_path / "EPIC_100_test.csv", [])
    expect_error(str(source), "no segments", source=source)


# -- Folders --------------------------------------------------------------------------------------


def make_clips(folder: Path) -> list[str]:
    """Videos (nested, any suffix case) among files that must be skipped; the expected ids."""
    videos = ["b.mp4", "a.MP4", "Z.Mov", "sub/c.webm", "sub/deeper/d.mkv", "sub/e.avi"]
    skipped = [".hidden.mp4", ".cache/f.mp4", "sub/.git/g.mp4", "notes.txt", "sub/thumb.jpg"]
    skipped += ["mp4", "sub/README"]
    for rel in videos + skipped:
        touch(folder / rel)
    return sorted(videos)


def test_folder_lists_every_video_below_it_sorted(tmp_path):
    folder = tmp_path / "clips"
    expected = make_clips(folder)
    dataset = open_source(folder)
    assert (dataset.kind, dataset.name) == ("folder", "clips")
    assert dataset.source == dataset.root == folder.resolve()
    assert [i.video for i in dataset.items] == expected
    assert expected == ["Z.Mov", "a.MP4", "b.mp4", "sub/c.webm", "sub/deeper/d.mkv", "sub/e.avi"]
    assert all(i.path == i.video and i.segment is None for i in dataset.items)


@pytest.mark.parametrize(
    "content", [[], [".hidden.mp4", "notes.txt", ".x/y.mp4"]], ids=["empty", "no-visible-video"]
)
def test_folder_without_videos(tmp_path, content):
    folder = tmp_path / "clips"
    folder.mkdir()
    for rel in content:
        touch(folder / rel)
    expect_error(str(folder.resolve()), "no video files", source=folder)


def test_nonexistent_source(tmp_path):
    expect_error(str(tmp_path / "missing"), "no such file or folder", source=tmp_path / "missing")


@pytest.mark.parametrize("name", ["list.txt", "clip.mp4"])
def test_source_of_another_kind_of_file(tmp_path, name):
    source = touch(tmp_path / name)
    expect_error(str(source), ".json", ".csv", source=source)


# -- Data root ------------------------------------------------------------------------------------


def test_folder_under_a_data_root(tmp_path):
    folder = tmp_path / "data" / "clips"
    expected = make_clips(folder)
    dataset = open_source(folder, data_root=tmp_path / "data")
    assert dataset.root == (tmp_path / "data").resolve()
    assert [i.video for i in dataset.items] == [f"clips/{p}" for p in expected]
    assert [i.path for i in dataset.items] == [f"clips/{p}" for p in expected]


def test_folder_that_is_the_data_root(tmp_path):
    expected = make_clips(tmp_path / "clips")
    dataset = open_source(tmp_path / "clips", data_root=tmp_path / "clips")
    assert [(i.video, i.path) for i in dataset.items] == [(p, p) for p in expected]


def test_ssv2_under_a_data_root_keeps_dataset_ids(tmp_path):
    label = ssv2_dir(tmp_path / "data" / "ssv2", SSV2_TRAIN, videos="20bn-something-something-v2")
    dataset = open_source(label, data_root=tmp_path / "data")
    assert dataset.root == (tmp_path / "data").resolve()
    assert dataset.items[0] == ClipItem("78687", "ssv2/20bn-something-something-v2/78687.webm")
    assert [i.video for i in dataset.items] == ["78687", "42326", "100904"]


def test_epic_under_a_data_root_keeps_narration_ids_and_segments(tmp_path):
    source = write_epic(tmp_path / "data" / "epic" / "EPIC_100_train.csv", EPIC_ROWS[:1])
    dataset = open_source(source, data_root=tmp_path / "data")
    assert dataset.items == [
        ClipItem("P01_01_0", "epic/P01/videos/P01_01.MP4", (7, 202), {"verb": 3, "noun": 8})
    ]


def test_source_outside_the_data_root(tmp_path):
    make_clips(tmp_path / "clips")
    (tmp_path / "other").mkdir()
    expect_error(
        str((tmp_path / "clips").resolve()),
        "not under the data root",
        source=tmp_path / "clips",
        data_root=tmp_path / "other",
    )


# -- Jobs -----------------------------------------------------------------------------------------


def test_clip_item_to_job():
    job = ClipItem("a/b.mp4", "a/b.mp4").to_job()
    assert job.to_payload() == {"video": "a/b.mp4", "path": "a/b.mp4"}
    job = ClipItem("P01_01_0", "P01/videos/P01_01.MP4", (7, 202)).to_job().to_payload()
    assert job == {"video": "P01_01_0", "path": "P01/videos/P01_01.MP4", "segment": [7, 202]}
    assert json.loads(json.dumps(job)) == job  # what RQ stores


def test_epic_test_csv_without_classes_has_no_labels(tmp_path):
    header = [
        c
        for c in EPIC_HEADER
        if c not in ("verb", "verb_class", "noun", "noun_class", "all_nouns", "all_noun_classes")
    ]
    rows = [{k: v for k, v in r.items() if k in header} for r in EPIC_ROWS]
    source = write_epic(tmp_path / "EPIC_100_test_timestamps.csv", rows, header)
    assert all(item.labels == {} for item in open_source(source).items)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"verb_class": "97"}, "verb_class '97' is not a class 0..96"),
        ({"noun_class": "x"}, "noun_class 'x' is not a class 0..299"),
        ({"verb_class": ""}, "verb_class '' is not a class"),
    ],
)
def test_epic_bad_classes_name_the_line(tmp_path, fields, message):
    rows = [EPIC_ROWS[0], {**EPIC_ROWS[1], **fields}]
    source = write_epic(tmp_path / "EPIC_100_train.csv", rows)
    expect_error(f"{source}: line 3: {message}", source=source)


def test_ssv2_labels_come_from_labels_json(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "labels.json").write_text(
        json.dumps({"Pushing something from left to right": "0", "Holding something": "1"})
    )
    entries = [
        {
            "id": "5",
            "template": "Holding [something]",
            "label": "holding a cup",
            "placeholders": ["a cup"],
        },
        {
            "id": "9",
            "template": "Pushing [something] from left to right",
            "label": "x",
            "placeholders": ["x"],
        },
    ]
    (tmp_path / "train.json").write_text(json.dumps(entries))
    items = open_source(tmp_path / "train.json").items
    assert [(i.video, i.labels) for i in items] == [("5", {"action": 1}), ("9", {"action": 0})]
    (tmp_path / "test.json").write_text(json.dumps([{"id": "7"}]))  # the test split: no labels
    assert open_source(tmp_path / "test.json").items[0].labels == {}
    entries[1]["template"] = "Juggling [something]"
    (tmp_path / "train.json").write_text(json.dumps(entries))
    expect_error(
        "entry 1 (id 9): template 'Juggling [something]' is not a class of",
        source=tmp_path / "train.json",
    )
    (tmp_path / "labels.json").write_text(json.dumps({"a": "0", "b": "0"}))
    expect_error("class indices must be 0..1, each once", source=tmp_path / "train.json")
