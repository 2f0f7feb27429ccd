"""The box cache as one file: export, import, and a read-only cache over an exported file.

Two formats, chosen by the file name: ``.jsonl.gz`` (one record's JSON per line, exactly as the
cache stores it) and ``.parquet`` (one row per record, the record's fields as typed columns).
Records come out sorted by (params, video), so the same cache always gives the same file.
Training can read an export through :class:`FileBoxCache` without a Redis server.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from mofo.shared.cache import MGET_CHUNK, RedisBoxCache
from mofo.shared.errors import MofoError
from mofo.shared.keys import box_key
from mofo.shared.record import BoxRecord

PARQUET_BATCH = 10_000
SCAN_COUNT = 10_000


class CacheFileError(MofoError):
    """An export or import file that cannot be written or read."""


def file_format(path: Path) -> str:
    name = Path(path).name.lower()
    if name.endswith(".jsonl.gz"):
        return "jsonl.gz"
    if name.endswith(".parquet"):
        return "parquet"
    raise CacheFileError(f"{path}: name it .parquet or .jsonl.gz (the format follows the name)")


def _arrow_schema():
    import pyarrow as pa

    box = pa.list_(pa.int32())
    return pa.schema(
        [
            ("schema", pa.string()),
            ("video", pa.string()),
            ("params", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("fps", pa.float64()),
            ("frame_indices", pa.list_(pa.int64())),
            ("frames", pa.list_(box)),  # a frame without a box is a null entry
            ("clip_box", box),
            ("fallback", pa.bool_()),
            ("own", pa.list_(pa.bool_())),
            ("cuts", pa.list_(pa.int64())),
        ]
    )


def record_keys(cache: RedisBoxCache, params: str | None = None) -> list[str]:
    """Every record key of the cache (of one params hash when given), sorted."""
    pattern = f"{cache.prefix}:{params or '*'}:*"
    keys = {k.decode() for k in cache.redis.scan_iter(match=pattern, count=SCAN_COUNT)}
    return sorted(keys)


def _stored_values(cache: RedisBoxCache, keys: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    for start in range(0, len(keys), MGET_CHUNK):
        part = keys[start : start + MGET_CHUNK]
        for key, value in zip(part, cache.redis.mget(part), strict=True):
            if value is not None:  # deleted since the scan
                yield key, value


def export_cache(cache: RedisBoxCache, path: Path, params: str | None = None) -> int:
    """Write every record (of ``params`` when given) to ``path``; the number written.

    The file appears only when complete (written beside it, then renamed).
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.parent.is_dir():
        raise CacheFileError(f"{path}: folder {path.parent} does not exist")
    keys = record_keys(cache, params)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if fmt == "jsonl.gz":
            n = _write_jsonl(cache, keys, tmp)
        else:
            n = _write_parquet(cache, keys, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def write_records(path: Path, records: Iterable[BoxRecord]) -> int:
    """Records made elsewhere (not read from Redis) as an export file, ``.jsonl.gz`` only, in key
    order; what training reads with ``FileBoxCache`` where no Redis runs."""
    path = Path(path)
    if file_format(path) != "jsonl.gz":
        raise CacheFileError(f"{path}: records are written as .jsonl.gz")
    ordered = sorted(records, key=lambda r: box_key(r.params, r.video))
    tmp = path.with_name(f".{path.name}.part")
    try:
        n = _write_lines(tmp, (record.to_json().encode() for record in ordered))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _checked(key: str, value: bytes) -> BoxRecord:
    try:
        return BoxRecord.from_json(value)
    except (ValueError, TypeError) as exc:
        raise CacheFileError(f"cache key {key} holds no valid box record: {exc}") from None


def _write_lines(tmp: Path, lines: Iterable[bytes]) -> int:
    """JSON lines into a gzip file; the number written. No name and mtime 0 in the gzip header:
    the same records give the same bytes."""
    n = 0
    with open(tmp, "wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as out:
        for line in lines:
            out.write(line.rstrip(b"\n") + b"\n")
            n += 1
    return n


def _write_jsonl(cache: RedisBoxCache, keys: Sequence[str], tmp: Path) -> int:
    def checked() -> Iterator[bytes]:
        for key, value in _stored_values(cache, keys):
            _checked(key, value)  # a bad value stops the export with its key
            yield value

    return _write_lines(tmp, checked())


def _write_parquet(cache: RedisBoxCache, keys: Sequence[str], tmp: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    n = 0
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        rows: list[dict] = []
        for key, value in _stored_values(cache, keys):
            rows.append(_checked(key, value).to_dict())
            if len(rows) == PARQUET_BATCH:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                n += len(rows)
                rows = []
        if rows or n == 0:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            n += len(rows)
    return n


def read_records(path: Path) -> Iterator[BoxRecord]:
    """The records of an export file, each checked; a bad one stops with its line or row."""
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise CacheFileError(f"{path}: no such file")
    if fmt == "jsonl.gz":
        yield from _read_jsonl(path)
    else:
        yield from _read_parquet(path)


def _read_jsonl(path: Path) -> Iterator[BoxRecord]:
    try:
        with gzip.open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    yield BoxRecord.from_json(line)
                except (ValueError, TypeError) as exc:
                    raise CacheFileError(
                        f"{path}: line {number}: not a box record: {exc}"
                    ) from None
    except (OSError, EOFError, zlib.error) as exc:  # not gzip, cut short or damaged
        raise CacheFileError(f"{path}: cannot be read as gzip: {exc}") from None


def _read_parquet(path: Path) -> Iterator[BoxRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise CacheFileError(f"{path}: not a Parquet file: {exc}") from None
    row = 0
    batches = handle.iter_batches(batch_size=PARQUET_BATCH)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:  # a damaged page
            raise CacheFileError(f"{path}: after row {row}: cannot be read: {exc}") from None
        if batch is None:
            return
        for data in batch.to_pylist():
            row += 1
            try:
                yield BoxRecord.from_dict(data)
            except (ValueError, TypeError) as exc:
                raise CacheFileError(f"{path}: row {row}: not a box record: {exc}") from None


def import_cache(cache: RedisBoxCache, path: Path, overwrite: bool = False) -> tuple[int, int]:
    """Load an export into the cache; (records written, records skipped as already there).

    The whole file is checked first, so a bad line writes nothing. Existing records are kept
    unless ``overwrite``.
    """
    total = sum(1 for _ in read_records(path))
    written = 0
    pipe = cache.redis.pipeline(transaction=False)
    pending: list = []

    def flush() -> int:
        results = pipe.execute()
        pending.clear()
        return sum(1 for r in results if r)

    for record in read_records(path):
        key = box_key(record.params, record.video, cache.prefix)
        pipe.set(key, record.to_json(), nx=not overwrite)
        pending.append(key)
        if len(pending) == MGET_CHUNK:
            written += flush()
    if pending:
        written += flush()
    return written, total - written


class FileBoxCache:
    """A read-only box cache over an export file, for training on machines without Redis."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._records: dict[str, str] = {
            box_key(r.params, r.video): r.to_json() for r in read_records(self.path)
        }

    def __len__(self) -> int:
        return len(self._records)

    def get(self, video_id: str, params_hash: str) -> BoxRecord | None:
        return self.get_many([video_id], params_hash)[0]

    def get_many(self, video_ids: Sequence[str], params_hash: str) -> list[BoxRecord | None]:
        values = (self._records.get(box_key(params_hash, v)) for v in video_ids)
        return [None if v is None else BoxRecord.from_json(v) for v in values]

    def put(self, record: BoxRecord) -> None:
        raise CacheFileError(f"{self.path}: an exported cache is read-only")

    def ping(self) -> None:
        return None


def open_box_cache(where: str) -> RedisBoxCache | FileBoxCache:
    """A box cache from a Redis URL or the path of an export file (what training is given)."""
    if where.startswith(("redis://", "rediss://", "unix://")):
        return RedisBoxCache.from_url(where)
    return FileBoxCache(Path(where))
