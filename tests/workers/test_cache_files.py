"""Export and import of the Redis box cache (:mod:`mofo.shared.cache_files`) against a private
``redis-server``: both file formats, byte-exact round trips, the read-only
:class:`FileBoxCache`, every way a file can be bad, and the ``mofo cache export|import`` commands
run as a user runs them."""

from __future__ import annotations

import gzip
import json

import pytest
import redis

from mofo.shared.cache import RedisBoxCache
from mofo.shared.cache_files import (
    CacheFileError,
    FileBoxCache,
    export_cache,
    file_format,
    import_cache,
    open_box_cache,
    read_records,
)
from mofo.shared.keys import BOX_PREFIX, box_key
from mofo.shared.params import MotionParams
from mofo.shared.record import BoxRecord
from testkit.datasets import mofo_env
from testkit.redis_server import start_redis
from testkit.server import free_port
from tests.workers.conftest import mofo

HASH_A = MotionParams(short_side=64).hash()
HASH_B = MotionParams(short_side=128).hash()
FORMATS = ["jsonl.gz", "parquet"]


def make_records() -> list[BoxRecord]:
    """30 records: 20 under HASH_A, 10 under HASH_B, ids of all three dataset kinds."""
    videos = [f"clips/real/{k:02d}.mp4" for k in range(8)]
    videos += [str(78687 + k) for k in range(6)] + [f"P01_01_{k}" for k in range(6)]
    records = []
    for k, video in enumerate(videos):
        n = 4 + k % 3
        frames = [[k, 2, 40 + f, 50 + k] for f in range(n)]
        if k % 5 == 0:
            frames[1] = None  # a frame without a box
        records.append(
            BoxRecord(
                video=video,
                params=HASH_A,
                width=320 + k,
                height=240,
                fps=29.97002997002997 if k % 2 else 25.0,
                frame_indices=[f * 7 for f in range(n)],
                frames=frames,
                clip_box=[k, 2, 40 + n, 50 + k],
                fallback=k % 7 == 0,
            )
        )
    for k in range(10):
        records.append(
            BoxRecord(
                video=f"synth/s{k:02d}.mp4",
                params=HASH_B,
                width=96,
                height=64,
                fps=12.5,
                frame_indices=[0, 1, 2],
                frames=[None, [0, 0, 96, 64], [1, 1, 95, 63]],
                clip_box=[0, 0, 96, 64],
                fallback=True,
            )
        )
    return records


RECORDS = make_records()


def key_of(record: BoxRecord) -> str:
    return box_key(record.params, record.video)


def sorted_records(params: str | None = None) -> list[BoxRecord]:
    chosen = [r for r in RECORDS if params in (None, r.params)]
    return sorted(chosen, key=key_of)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def client(server) -> redis.Redis:
    connection = redis.Redis.from_url(server.url)
    connection.flushall()
    return connection


@pytest.fixture
def cache(client, server) -> RedisBoxCache:
    """The cache holding RECORDS, put in reverse order (so sorted output is the export's doing)."""
    box_cache = RedisBoxCache(client, server.url)
    box_cache.put_many(reversed(RECORDS))
    return box_cache


def stored(client: redis.Redis) -> dict[str, bytes]:
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{BOX_PREFIX}:*"))
    return dict(zip(keys, client.mget(keys), strict=True)) if keys else {}


def jsonl_gz(path, lines: list[str]):
    path.write_bytes(gzip.compress("".join(f"{line}\n" for line in lines).encode(), mtime=0))
    return path


# -- Export ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_writes_every_record_sorted_by_key(cache, tmp_path, fmt):
    path = tmp_path / f"boxes.{fmt}"
    assert export_cache(cache, path) == 30
    assert list(read_records(path)) == sorted_records()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no .part left beside it


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_of_one_params_hash(cache, tmp_path, fmt):
    path = tmp_path / f"a.{fmt}"
    assert export_cache(cache, path, params=HASH_A) == 20
    assert list(read_records(path)) == sorted_records(HASH_A)
    assert export_cache(cache, tmp_path / f"b.{fmt}", params=HASH_B) == 10
    assert {r.params for r in read_records(tmp_path / f"b.{fmt}")} == {HASH_B}
    assert export_cache(cache, tmp_path / f"none.{fmt}", params="0123456789abcdef") == 0
    assert list(read_records(tmp_path / f"none.{fmt}")) == []


def test_jsonl_export_is_the_stored_values_and_byte_identical_twice(cache, client, tmp_path):
    path = tmp_path / "boxes.jsonl.gz"
    export_cache(cache, path)
    first = path.read_bytes()
    export_cache(cache, path)
    assert path.read_bytes() == first
    lines = gzip.decompress(first).split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == list(stored(client).values())  # exactly as stored, in key order
    assert json.loads(lines[0])["schema"] == "mofo.box/2"


def test_jsonl_export_bytes_do_not_depend_on_the_file_name(cache, tmp_path):
    first, second = tmp_path / "1.jsonl.gz", tmp_path / "2.jsonl.gz"
    export_cache(cache, first)
    export_cache(cache, second)
    assert b".part" not in first.read_bytes()[:64]
    assert first.read_bytes() == second.read_bytes()


def test_values_survive_both_formats_exactly(cache, tmp_path):
    odd = next(r for r in RECORDS if r.fps != 25.0 and None in r.frames)
    for fmt in FORMATS:
        path = tmp_path / f"x.{fmt}"
        export_cache(cache, path)
        again = {key_of(r): r for r in read_records(path)}[key_of(odd)]
        assert again == odd
        assert again.fps == 29.97002997002997 and isinstance(again.fps, float)
        assert again.frames[1] is None
        assert all(isinstance(v, int) for v in [again.width, *again.frame_indices, *again.clip_box])
        assert again.to_json() == odd.to_json()


# -- Import ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_import_into_an_empty_redis_restores_the_same_bytes(cache, client, tmp_path, fmt):
    original = stored(client)
    assert len(original) == 30
    path = tmp_path / f"boxes.{fmt}"
    export_cache(cache, path)

    client.flushall()
    assert import_cache(cache, path) == (30, 0)
    assert stored(client) == original

    assert import_cache(cache, path) == (0, 30)  # all there: kept
    changed = key_of(RECORDS[3])
    client.set(changed, b"changed since")
    assert import_cache(cache, path) == (0, 30)
    assert client.get(changed) == b"changed since"

    client.delete(key_of(RECORDS[0]))
    assert import_cache(cache, path, overwrite=True) == (30, 0)
    assert stored(client) == original


def test_import_of_an_empty_export(client, server, tmp_path):
    box_cache = RedisBoxCache(client, server.url)
    for fmt in FORMATS:
        assert export_cache(box_cache, tmp_path / f"e.{fmt}") == 0
        assert import_cache(box_cache, tmp_path / f"e.{fmt}") == (0, 0)
    assert client.dbsize() == 0


# -- Bad names and bad files ----------------------------------------------------------------------


def test_format_follows_the_name(tmp_path):
    assert file_format(tmp_path / "x.jsonl.gz") == "jsonl.gz"
    assert file_format(tmp_path / "X.JSONL.GZ") == "jsonl.gz"
    assert file_format(tmp_path / "x.parquet") == "parquet"
    for name in ["x.json", "x.gz", "x.jsonl", "x.csv", "parquet"]:
        with pytest.raises(CacheFileError, match=name):
            file_format(tmp_path / name)


def test_bad_suffix_is_refused_before_anything_happens(cache, client, tmp_path):
    before = stored(client)
    for call in (export_cache, import_cache):
        with pytest.raises(CacheFileError, match=r"x\.json: name it \.parquet or \.jsonl\.gz"):
            call(cache, tmp_path / "x.json")
    with pytest.raises(CacheFileError, match=r"x\.json"):
        list(read_records(tmp_path / "x.json"))
    assert list(tmp_path.iterdir()) == []
    assert stored(client) == before


def test_export_into_a_missing_folder(cache, tmp_path):
    with pytest.raises(CacheFileError, match="does not exist") as caught:
        export_cache(cache, tmp_path / "nope" / "boxes.parquet")
    assert str(tmp_path / "nope") in str(caught.value)
    assert not (tmp_path / "nope").exists()


def test_import_of_a_missing_file(cache, tmp_path):
    with pytest.raises(CacheFileError, match="no such file"):
        import_cache(cache, tmp_path / "gone.parquet")


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("this is not json", id="not-json"),
        pytest.param('{"schema": "mofo.box/2", "video": "v"}', id="fields-missing"),
        pytest.param(RECORDS[0].to_json().replace("mofo.box/2", "mofo.box/0"), id="old-schema"),
        pytest.param(RECORDS[0].to_json()[:40], id="cut-short"),
        pytest.param(
            "[1, 2, 3]",
            id="json-list",
        ),
    ],
)
def test_a_bad_line_stops_the_import_before_anything_is_written(cache, client, tmp_path, bad):
    client.flushall()
    path = jsonl_gz(tmp_path / "bad.jsonl.gz", [RECORDS[0].to_json(), RECORDS[1].to_json(), bad])
    with pytest.raises(CacheFileError, match="line 3") as caught:
        import_cache(cache, path)
    assert str(path) in str(caught.value)
    assert client.dbsize() == 0  # the whole file is checked first
    with pytest.raises(CacheFileError, match="line 3"):
        FileBoxCache(path)


def test_blank_lines_are_skipped_but_counted(cache, client, tmp_path):
    client.flushall()
    path = jsonl_gz(tmp_path / "gaps.jsonl.gz", [RECORDS[0].to_json(), "", RECORDS[1].to_json()])
    assert import_cache(cache, path) == (2, 0)
    bad = jsonl_gz(tmp_path / "bad.jsonl.gz", [RECORDS[0].to_json(), "", "{}"])
    with pytest.raises(CacheFileError, match="line 3"):
        list(read_records(bad))


def test_not_gzip_named_jsonl_gz(cache, client, tmp_path):
    client.flushall()
    path = tmp_path / "plain.jsonl.gz"
    path.write_text(RECORDS[0].to_json() + "\n")
    with pytest.raises(CacheFileError, match="gzip") as caught:
        import_cache(cache, path)
    assert str(path) in str(caught.value)
    assert client.dbsize() == 0


def test_truncated_gzip(cache, tmp_path):
    whole = jsonl_gz(tmp_path / "whole.jsonl.gz", [r.to_json() for r in RECORDS]).read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CacheFileError, match="cannot be read as gzip"):
        import_cache(cache, path)


def test_gzip_with_a_damaged_stream(cache, client, tmp_path):
    client.flushall()
    data = bytearray(
        gzip.compress(b"".join(r.to_json().encode() + b"\n" for r in RECORDS), mtime=0)
    )
    data[11] ^= 0xFF  # inside the deflate stream, just past the 10-byte gzip header
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(CacheFileError, match=r"damaged\.jsonl\.gz"):
        import_cache(cache, path)
    assert client.dbsize() == 0


def test_not_parquet_named_parquet(cache, client, tmp_path):
    client.flushall()
    path = jsonl_gz(tmp_path / "boxes.parquet", [RECORDS[0].to_json()])
    with pytest.raises(CacheFileError, match="not a Parquet file") as caught:
        import_cache(cache, path)
    assert str(path) in str(caught.value)
    with pytest.raises(CacheFileError, match="not a Parquet file"):
        FileBoxCache(path)
    assert client.dbsize() == 0


def test_parquet_cut_short(cache, client, tmp_path):
    path = tmp_path / "boxes.parquet"
    export_cache(cache, path)
    path.write_bytes(path.read_bytes()[:-100])
    client.flushall()
    with pytest.raises(CacheFileError, match="not a Parquet file"):
        import_cache(cache, path)
    assert client.dbsize() == 0


def test_parquet_of_other_columns_names_the_row(cache, client, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"video": ["a", "b"], "score": [1.0, 2.0]}), path)
    client.flushall()
    with pytest.raises(CacheFileError, match="row 1") as caught:
        import_cache(cache, path)
    assert str(path) in str(caught.value)
    assert client.dbsize() == 0


def test_parquet_with_a_damaged_data_page(cache, client, tmp_path):
    path = tmp_path / "boxes.parquet"
    export_cache(cache, path)
    data = bytearray(path.read_bytes())
    for k in range(100, 400):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))
    client.flushall()
    with pytest.raises(CacheFileError, match=r"boxes\.parquet"):
        import_cache(cache, path)
    assert client.dbsize() == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_failed_export_leaves_no_file(cache, client, tmp_path, fmt):
    bad_key = box_key(HASH_A, "zz/broken.mp4")
    client.set(bad_key, b"not a record")
    path = tmp_path / f"boxes.{fmt}"
    with pytest.raises(CacheFileError, match=r"zz/broken\.mp4") as caught:
        export_cache(cache, path)
    assert "holds no valid box record" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part

    client.delete(bad_key)
    export_cache(cache, path)
    earlier = path.read_bytes()
    client.set(bad_key, b"{}")
    with pytest.raises(CacheFileError):
        export_cache(cache, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert path.read_bytes() == earlier  # an earlier export stays whole


def test_parquet_export_of_a_record_of_wrong_types(cache, client, tmp_path):
    data = RECORDS[0].to_dict() | {"video": "zz/wide.mp4", "width": "wide"}
    client.set(box_key(HASH_A, "zz/wide.mp4"), json.dumps(data))
    try:
        with pytest.raises(CacheFileError, match=r"zz/wide\.mp4"):
            export_cache(cache, tmp_path / "boxes.parquet")
    finally:
        assert list(tmp_path.iterdir()) == []


# -- Reading an export without Redis --------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_box_cache_answers_like_the_redis_cache(cache, tmp_path, fmt):
    path = tmp_path / f"boxes.{fmt}"
    export_cache(cache, path)
    files = FileBoxCache(path)
    assert len(files) == 30
    for params in (HASH_A, HASH_B):
        ids = [r.video for r in RECORDS if r.params == params]
        asked = [*ids, "not/cached.mp4", RECORDS[-1].video, ids[0]]
        from_file = files.get_many(asked, params)
        assert from_file == cache.get_many(asked, params)
        assert from_file[: len(ids)] == [r for r in RECORDS if r.params == params]
        assert from_file[len(ids)] is None
    assert files.get(RECORDS[5].video, HASH_A) == RECORDS[5]
    assert files.get(RECORDS[5].video, HASH_B) is None
    assert files.get_many([], HASH_A) == []
    assert files.ping() is None
    with pytest.raises(CacheFileError, match="read-only"):
        files.put(RECORDS[0])
    assert len(files) == 30


def test_open_box_cache_by_url_or_path(cache, server, tmp_path):
    from_url = open_box_cache(server.url)
    assert isinstance(from_url, RedisBoxCache)
    assert from_url.get(RECORDS[2].video, HASH_A) == RECORDS[2]
    path = tmp_path / "boxes.jsonl.gz"
    export_cache(cache, path)
    from_file = open_box_cache(str(path))
    assert isinstance(from_file, FileBoxCache)
    assert from_file.get(RECORDS[2].video, HASH_A) == RECORDS[2]
    with pytest.raises(CacheFileError, match="no such file"):
        open_box_cache(str(tmp_path / "missing.parquet"))


# -- The commands ---------------------------------------------------------------------------------


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_cli_export_then_import(cache, client, server, tmp_path):
    env = mofo_env(MOFO_REDIS_URL=server.url)
    original = stored(client)
    path = tmp_path / "out.parquet"
    done = mofo("cache", "export", str(path), env=env)
    assert done.returncode == 0, done.stderr
    assert "exported 30 records" in done.stderr
    assert list(read_records(path)) == sorted_records()

    part = mofo("cache", "export", str(tmp_path / "a.jsonl.gz"), "--params", HASH_A, env=env)
    assert part.returncode == 0, part.stderr
    assert "exported 20 records" in part.stderr

    client.flushall()
    loaded = mofo("cache", "import", str(path), env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert "imported 30 records" in loaded.stderr
    assert stored(client) == original
    again = mofo("cache", "import", str(path), env=env)
    assert "imported 0 records" in again.stderr and "30 already there" in again.stderr


def test_cli_import_of_a_bad_line(cache, client, server, tmp_path):
    client.flushall()
    path = jsonl_gz(tmp_path / "bad.jsonl.gz", [RECORDS[0].to_json(), "{}", "garbage"])
    done = mofo("cache", "import", str(path), env=mofo_env(MOFO_REDIS_URL=server.url))
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "line 2" in line and str(path) in line
    assert client.dbsize() == 0


def test_cli_export_to_a_bad_name(server, tmp_path):
    done = mofo("cache", "export", str(tmp_path / "x.txt"), env=mofo_env(MOFO_REDIS_URL=server.url))
    assert done.returncode == 2
    assert "x.txt" in one_error_line(done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_cli_error_names_a_file_with_brackets_verbatim(server, tmp_path):
    path = tmp_path / "out[x].txt"
    done = mofo("cache", "export", str(path), env=mofo_env(MOFO_REDIS_URL=server.url))
    assert done.returncode == 2
    assert str(path) in one_error_line(done.stderr)


def test_cli_without_redis(tmp_path):
    done = mofo("cache", "export", str(tmp_path / "out.parquet"), env=mofo_env())
    assert done.returncode == 2
    assert "MOFO_REDIS_URL" in one_error_line(done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_cli_with_redis_unreachable(tmp_path):
    env = mofo_env(MOFO_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    given = jsonl_gz(tmp_path / "in.jsonl.gz", [RECORDS[0].to_json()])
    for args in (["export", str(tmp_path / "out.parquet")], ["import", str(given)]):
        done = mofo("cache", *args, env=env)
        assert done.returncode == 3, done.stderr  # Redis, not the file
        assert "unreachable" in one_error_line(done.stderr)
    assert [p.name for p in tmp_path.iterdir()] == ["in.jsonl.gz"]
