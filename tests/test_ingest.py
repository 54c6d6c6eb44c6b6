"""%%ingest with a real Spark session: every source format, the versions, and every bad input."""
import gzip
import http.server
import shutil
import struct
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import module_data_dir

import nbscale
from nbscale.errors import NbscaleError, SparkJobError
from nbscale.ingest import dataset, datasets, ingest, store

pytestmark = pytest.mark.slow

CSV = 'id,name,score\n1,alice,3.5\n2,bob,notanumber\n3,carol\n4,dave,1.0,extra\n5,"eve, jr",2.0\n6,,\n\n7,"unclosed,1.0\n8,frank,4.0\n'


@pytest.fixture(scope="module", autouse=True)
def spark(tmp_path_factory):
    with module_data_dir(tmp_path_factory, "ingest-data"):  # a clean dataset store for this module
        yield nbscale.spark()


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_quarantines_every_malformed_row_and_counts_add_up(tmp_path):
    source = write(tmp_path / "people.csv", CSV)
    result = ingest("people", source, label="name", schema="id INT, name STRING, score DOUBLE")
    counts = result.manifest["counts"]
    assert counts == {"read": 8, "loaded": 4, "quarantined": 4}
    reasons = {r["raw"]: r["reason"] for r in result.dataset.quarantine.collect()}
    assert reasons == {
        "2,bob,notanumber": "a value does not parse as its column's type",
        "3,carol": "short row (2 of 3 fields)",
        "4,dave,1.0,extra": "long row (4 of 3 fields)",
        '7,"unclosed,1.0': "unbalanced quote",
    }
    loaded = {r["id"]: (r["name"], r["score"]) for r in result.dataset.df.collect()}
    assert loaded == {1: ("alice", 3.5), 5: ("eve, jr", 2.0), 6: (None, None), 8: ("frank", 4.0)}
    assert result.manifest["nulls"] == {"id": 0, "name": 1, "score": 1}
    html = result._repr_html_()
    assert "quarantined <b>4</b>" in html and "people@v1" in html


def test_a_clean_csv_is_parsed_once_and_a_dirty_one_again_for_its_quarantine(tmp_path, spark):
    """Writing the good rows counts the malformed ones (a Spark Observation): the quarantine's second parse runs only
    when that count is not zero."""
    from nbscale.ingest import _quarantine_after_the_write, readers

    for text, schema, malformed in (("a,b\n1,2\n3,4\n", None, 0), (CSV, "id INT, name STRING, score DOUBLE", 4)):
        source = write(tmp_path / f"rows-{malformed}.csv", text)
        read = readers.read_csv(spark, source, schema, True, ",")
        built = []
        build = read.quarantine_of
        read.quarantine_of = lambda built=built, build=build: built.append(1) or build()
        read.df.write.parquet(str(tmp_path / f"good-{malformed}"))
        assert read.observation.get == {"malformed": malformed}
        quarantine = _quarantine_after_the_write(read)
        assert (quarantine is None and built == []) if malformed == 0 else (quarantine.count() == malformed and built == [1])
        for frame in read.cached:
            frame.unpersist()


def test_failfast_stops_at_the_first_bad_row_and_publishes_nothing(tmp_path):
    source = write(tmp_path / "bad.csv", "a,b\n1,2\n3\n")
    with pytest.raises(NbscaleError, match=r"^Malformed row in .*bad.csv: '3' \(short row \(1 of 2 fields\)\)\. .*--mode permissive"):
        ingest("strict", source, mode="failfast")
    assert store.versions("strict") == []


def test_json_lines_with_a_broken_record(tmp_path):
    source = write(tmp_path / "events.json", '{"user": "a", "clicks": 3}\n{"user": "b", "clicks": 5}\n{"user": "c", clicks: }\n')
    result = ingest("events", source, label="user")
    assert result.manifest["counts"] == {"read": 3, "loaded": 2, "quarantined": 1}
    assert result.dataset.quarantine.first()["raw"] == '{"user": "c", clicks: }'
    assert result.manifest["label_balance"] == {"a": 1, "b": 1}


def test_parquet_source_and_sql_over_versions(tmp_path, spark):
    spark.range(10).selectExpr("id", "id % 2 AS even").write.parquet(str(tmp_path / "numbers.parquet"))
    first = ingest("numbers", str(tmp_path / "numbers.parquet"))
    assert first.dataset.ref == "numbers@v1" and first.manifest["counts"]["loaded"] == 10
    ingest("numbers", str(tmp_path / "numbers.parquet"))
    picked = ingest("odd", "SELECT id FROM numbers@v1 WHERE even = 1")
    assert picked.manifest["format"] == "sql"
    assert sorted(r["id"] for r in picked.dataset.df.collect()) == [1, 3, 5, 7, 9]


def _idx(path: Path, array: np.ndarray) -> str:
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())
    return str(path)


@pytest.fixture
def idx_pair(tmp_path):
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(300, 28, 28))
    labels = rng.integers(0, 10, size=300)
    return images, labels, _idx(tmp_path / "train-images-idx3-ubyte.gz", images), _idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)


def test_idx_is_decoded_in_batches_and_sharded(idx_pair):
    images, labels, image_file, label_file = idx_pair
    result = ingest("tiny", f"{image_file} {label_file}", label="label", shards=3, batch_rows=64)
    m = result.manifest
    assert m["format"] == "idx" and m["counts"] == {"read": 300, "loaded": 300, "quarantined": 0}
    assert len(m["shards"]) == 3 and sum(s["rows"] for s in m["shards"]) == 300
    assert sum(s["row_groups"] for s in m["shards"]) >= 3  # Petastorm can give each of 3 workers a shard
    assert "5 Spark task(s) of at most 64 rows" in m["notes"][0]
    assert m["image_shape"] == [28, 28, 1]
    rows = result.dataset.df.collect()
    seen = {tuple(np.asarray(r["image"], dtype=np.uint8)): r["label"] for r in rows}
    assert all(seen[tuple(img.ravel())] == lab for img, lab in zip(images, labels))
    assert "data:image/png;base64" in result._repr_html_()


def test_idx_with_mismatched_counts_or_truncation_is_refused(tmp_path, idx_pair):
    _, _, image_file, _ = idx_pair
    short_labels = _idx(tmp_path / "short-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(NbscaleError, match="holds 300 images but .* holds 5 labels"):
        ingest("mismatch", f"{image_file} {short_labels}")
    truncated = tmp_path / "cut-labels-idx1-ubyte"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 300) + b"\x01" * 10)
    with pytest.raises(NbscaleError, match="truncated or damaged"):
        ingest("cut", f"{image_file} {truncated}", format="idx")


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits += 1
        super().do_GET()


def test_urls_are_downloaded_once_and_checksummed(idx_pair, tmp_path):
    from nbscale.datasets.download import download

    _, _, image_file, label_file = idx_pair
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_CountingHandler, directory=str(Path(image_file).parent)))
    server.hits = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        urls = f"{base}train-images-idx3-ubyte.gz {base}train-labels-idx1-ubyte.gz"
        assert ingest("remote", urls).manifest["counts"]["loaded"] == 300
        assert ingest("remote", urls).dataset.ref == "remote@v2"
        assert server.hits == 2  # the second ingest read the cache
        with pytest.raises(NbscaleError, match="downloaded with MD5 .*, expected 0{32}: the file is damaged"):
            download(f"{base}train-labels-idx1-ubyte.gz?again", md5="0" * 32)
        with pytest.raises(NbscaleError, match=r"Could not download .*missing.gz \(HTTP 404 File not found\)"):
            download(f"{base}missing.gz")
    finally:
        server.shutdown()


def test_fashion_mnist_builtin_points_at_the_official_checksummed_files():
    from nbscale.datasets.known import KNOWN_MD5
    from nbscale.ingest import BUILTINS

    source, options = BUILTINS["nbscale:fashion-mnist"]()
    assert options == {"format": "idx"}
    assert [KNOWN_MD5[url] for url in source.split()] == ["8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe"]


def test_digits_builtin_and_cache_and_handle(ip):
    result = ip.run_cell_magic("ingest", "digits --label label --shards 4 --cache memory -o digits_ds", "nbscale:digits")
    handle = ip.user_ns["digits_ds"]
    assert handle.ref == result.dataset.ref and handle.version == 1 and Path(handle.path).is_dir()
    assert handle.df.storageLevel.useMemory and handle.df.count() == 1797
    assert handle.to_pandas(3).shape == (3, 65)
    assert result.cache["level"] == "memory" and "multi-epoch re-reads hit the cache" in result._repr_html_()
    listed = ip.run_line_magic("datasets", "digits").data
    assert "digits@v1" in listed and "1797" in listed


def test_schema_drift_is_refused_unless_allowed(tmp_path):
    ingest("drifty", write(tmp_path / "a.csv", "id,score\n1,2.5\n2,3.5\n"))
    changed = write(tmp_path / "b.csv", "id,score,extra\n1,oops,x\n")
    with pytest.raises(NbscaleError, match=r"changes the schema of drifty@v1 \(new column extra \(string\); score: double -> string\)"):
        ingest("drifty", changed)
    assert store.versions("drifty") == [1]
    result = ingest("drifty", changed, allow_schema_change=True)
    assert result.changes["against"] == "drifty@v1" and result.changes["rows"] == -1
    assert "new column extra (string)" in result.changes["schema"]


@pytest.mark.parametrize("source, options, message", [
    ("{tmp}/empty.csv", {}, "holds no records: nothing to ingest"),
    ("{tmp}/nowhere/*.csv", {}, "No file matches"),
    ("{tmp}/table.xlsx", {}, "Cannot tell the format of"),
    ("{tmp}/ok.csv", {"format": "xml"}, "Unknown format 'xml'"),
    ("{tmp}/ok.csv", {"label": "churned"}, "Label column 'churned' is not in the data (columns: a, b)"),
    ("{tmp}/ok.csv", {"schema": "a INTEGRAL b"}, "is not a Spark DDL schema"),
    ("{tmp}/ok.csv", {"cache": "ssd"}, "is not a cache mode"),
])
def test_bad_input_is_one_line_and_publishes_nothing(tmp_path, source, options, message):
    write(tmp_path / "empty.csv", "")
    write(tmp_path / "ok.csv", "a,b\n1,2\n")
    write(tmp_path / "table.xlsx", "not really")
    with pytest.raises(NbscaleError) as raised:
        ingest("badcase", source.format(tmp=tmp_path), **options)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert store.versions("badcase") == []


def test_failed_write_midway_leaves_the_previous_version_intact(spark):
    spark.range(2000).write.mode("overwrite").parquet(str(Path(store.root()).parent / "src-2000.parquet"))
    first = ingest("steady", str(Path(store.root()).parent / "src-2000.parquet"))
    before = sorted(p.name for p in (store.root() / "steady").iterdir())
    with pytest.raises(SparkJobError) as raised:
        # assert_true fails inside the write job, after some tasks have written their files.
        ingest("steady", "SELECT id, assert_true(id < 1500) AS ok FROM steady", allow_schema_change=True)
    assert "\n" not in str(raised.value) and "at org.apache" not in str(raised.value)
    assert sorted(p.name for p in (store.root() / "steady").iterdir()) == before == ["v1"]
    assert dataset("steady").df.count() == 2000 and dataset("steady").ref == first.dataset.ref


def test_datasets_lists_versions_with_lineage():
    rows = {r["dataset"]: r for r in datasets()}
    assert rows["numbers@v2"]["rows"] == 10 and rows["numbers@v2"]["format"] == "parquet"
    assert rows["odd@v1"]["source"].startswith("SELECT id FROM numbers@v1")
    assert dataset("numbers@v1").manifest["options"]["shards"] is None
    with pytest.raises(NbscaleError, match=r"numbers has no version v9 \(versions: v1, v2\)"):
        dataset("numbers@v9")


def test_image_folder_with_a_broken_and_an_odd_sized_file(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    for cls in ("cat", "dog"):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8), "L").save(tmp_path / "pets" / cls / f"{i}.png")
    (tmp_path / "pets" / "dog" / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8), "L").save(tmp_path / "pets" / "cat" / "small.png")
    result = ingest("pets", str(tmp_path / "pets"), label="label", batch_rows=3)
    m = result.manifest
    assert m["format"] == "images" and m["counts"] == {"read": 10, "loaded": 8, "quarantined": 2}
    assert m["image_shape"] == [12, 10, 1] and m["label_balance"] == {"0": 4, "1": 4}
    reasons = sorted(r["reason"] for r in result.dataset.quarantine.collect())
    assert reasons == ["image is 5x5, the dataset is 10x12", "not a readable image (UnidentifiedImageError)"]
    row = result.dataset.df.where("path LIKE '%cat/2.png'").first()
    expected = np.asarray(Image.open(tmp_path / "pets" / "cat" / "2.png"), dtype=np.float32).ravel()
    assert np.array_equal(np.asarray(row["image"], dtype=np.float32), expected) and row["label_name"] == "cat"


def test_a_changed_file_is_read_afresh(tmp_path):
    source = write(tmp_path / "grow.csv", "a,b\n1,2\n3,4\n")
    assert ingest("grow", source).manifest["counts"]["loaded"] == 2
    write(tmp_path / "grow.csv", "a,b\n1,2\n3,4\n5,6\n")
    assert ingest("grow", source).manifest["counts"] == {"read": 3, "loaded": 3, "quarantined": 0}


def test_progress_reports_the_ingests_spark_jobs(tmp_path):
    source = write(tmp_path / "many.csv", "a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(20000)))
    seen = []
    ingest("progress", source, progress=seen.append, shards=3)
    final = seen[-1]
    assert final.finished and all(not s.finished for s in seen[:-1])
    assert final.jobs_total >= 3 and final.jobs_done == final.jobs_total
    assert final.tasks_total >= 3 and final.tasks_done == final.tasks_total and final.fraction == 1.0


def test_a_cached_version_survives_a_spark_restart(tmp_path):
    from nbscale.session import stop_spark

    cached = ingest("kept", write(tmp_path / "k.csv", "a,b\n1,2\n3,4\n"), cache="memory").dataset
    assert cached.df.storageLevel.useMemory
    stop_spark()
    assert cached.df.count() == 2  # read again from Parquet by the new session, not from a dead cache


def test_sql_naming_a_missing_version_is_one_line():
    with pytest.raises(NbscaleError, match=r"numbers has no version v9 \(versions: v1, v2\)"):
        ingest("nine", "SELECT * FROM numbers@v9")


def test_one_bad_cell_does_not_demote_a_numeric_column(tmp_path):
    """Spark's own inference makes f0 a string for one 'oops': the rows load, and training later refuses the column."""
    lines = ["f0,f1,name,label"] + [f"{i * 0.5},{i},n{i},{i % 2}" for i in range(569)] + ["oops,1,a,0", "2.5,x,b,1", "bad,y,c,0"]
    source = write(tmp_path / "numbers.csv", "\n".join(lines) + "\n")
    result = ingest("typed", source, label="label")
    assert result.manifest["counts"] == {"read": 572, "loaded": 569, "quarantined": 3}
    assert dict(map(tuple, result.manifest["schema"])) == {"f0": "double", "f1": "int", "name": "string", "label": "int"}
    assert result.manifest["type_failures"] == {"f0": 2, "f1": 2}  # cells: the row "bad,y" fails in both columns
    reasons = sorted(r["reason"] for r in result.dataset.quarantine.collect())
    assert reasons == ["type: f0 = 'bad' is not DOUBLE", "type: f0 = 'oops' is not DOUBLE", "type: f1 = 'x' is not INT"]
    assert "at least 90% of its non-empty values parse as numbers" in repr(result)
    assert "values that did not parse (quarantined)" in result._repr_html_()
    # --schema still overrides: f0 as text keeps every row.
    typed = ingest("typed_text", source, label="label", schema="f0 STRING, f1 STRING, name STRING, label INT")
    assert typed.manifest["counts"]["quarantined"] == 0 and typed.manifest["type_failures"] == {}


DIRTY = Path(__file__).parent / "data" / "dirty"


def test_bytes_that_are_not_utf8_stop_the_ingest_and_encoding_reads_them():
    with pytest.raises(NbscaleError) as refused:
        ingest("latin", str(DIRTY / "latin1.csv"), label="label")
    message = str(refused.value)
    assert "latin1.csv is not UTF-8: 2 line(s)" in message and "--encoding" in message and "\n" not in message
    assert store.versions("latin") == []  # nothing half-written
    result = ingest("latin", str(DIRTY / "latin1.csv"), label="label", encoding="latin-1")
    assert sorted(r["name"] for r in result.dataset.df.collect()) == ["café", "naïve", "plain"]
    windows = ingest("latin", str(DIRTY / "latin1.csv"), label="label", encoding="cp1252")  # any Java charset
    assert sorted(r["name"] for r in windows.dataset.df.collect()) == ["café", "naïve", "plain"]
    with pytest.raises(NbscaleError, match="--encoding 'klingon' is not a text encoding"):
        ingest("latin", str(DIRTY / "latin1.csv"), encoding="klingon")


def test_the_data_hosts_line_count_agrees_with_sparks_on_line_ends_blank_lines_and_bytes(tmp_path, monkeypatch):
    """A source below readers.LINES_HERE_BYTES is counted in one Python pass, a larger one by a Spark job: both count
    and skip lines alike, whatever the line ends, the chunk edges or the bytes."""
    from nbscale.ingest import readers

    contents = {"crlf.csv": b"a,b\r\n1,2\r\n\r\n3,4\r\n", "cr.csv": b"a,b\r1,2\r3,4", "blank.csv": b"a,b\n\t\n \x0b\x0c\n5,6\n",
                "empty.csv": b"", "spaces.csv": b"\n \n", "latin.csv": "a\ncaf\u00e9\nna\u00efve\n".encode("latin-1")}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    clean = [str(tmp_path / n) for n in contents if n != "latin.csv"]
    spark = nbscale.spark()
    here = readers.count_lines_here(clean, readers.LINES_HERE_BYTES)
    there = readers._count_lines_with_spark(spark, clean, True)
    assert here == ([3, 3, 2, 0, 0], 0, None) and sorted(there[0]) == [2, 3, 3] and there[1] == 0
    monkeypatch.setattr(readers, "_CHUNK", 3)  # lines and CRLFs cut across reads
    assert readers.count_lines_here(clean, readers.LINES_HERE_BYTES) == here
    assert readers._line_records(spark, clean, True) == 2 + 2 + 1  # one header in each file with a line
    assert readers._line_records(spark, [f"file://{p}" for p in clean], True) == 5  # a file: URI is a path here too
    (tmp_path / "zipped.csv.gz").write_bytes(gzip.compress(contents["blank.csv"]))  # Spark decompresses it, so Spark counts it
    assert readers._plain_path(str(tmp_path / "zipped.csv.gz")) is None
    assert readers._line_records(spark, [str(tmp_path / "zipped.csv.gz"), *clean], True) == 6
    lines, undecodable, (name, text) = readers.count_lines_here([str(tmp_path / "latin.csv")], readers.LINES_HERE_BYTES)
    assert (lines, undecodable, name, text) == ([3], 2, str(tmp_path / "latin.csv"), "caf\ufffd")
    assert readers._count_lines_with_spark(spark, [str(tmp_path / "latin.csv")], True)[:2] == ([3], 2)
    for limit in (readers.LINES_HERE_BYTES, 0):  # counted here, then by Spark: the same refusal
        monkeypatch.setattr(readers, "LINES_HERE_BYTES", limit)
        with pytest.raises(NbscaleError, match=r"^latin.csv is not UTF-8: 2 line\(s\) hold bytes that do not decode \(e.g. 'caf\ufffd'\)"):
            readers._line_records(spark, [str(tmp_path / "latin.csv")], False)
        assert readers._line_records(spark, clean, True) == 5


def test_a_bom_and_crlf_line_ends_load_clean_columns():
    result = ingest("bom", str(DIRTY / "bom-crlf.csv"), label="label")
    assert result.manifest["counts"] == {"read": 2, "loaded": 2, "quarantined": 0}
    assert [c for c, _ in result.manifest["schema"]] == ["a", "b", "label"]  # no '\ufeffa' column
    assert dict(map(tuple, result.manifest["schema"]))["b"] == "int"  # no '\r' left in the last column


def test_dirty_headers_and_lines_load_as_named_columns_with_a_word_on_the_card():
    tabs = ingest("tabs", str(DIRTY / "tab-only-line.csv"))
    assert tabs.manifest["counts"] == {"read": 2, "loaded": 2, "quarantined": 0}  # a lone tab is no record, as a blank line
    twice = ingest("twice", str(DIRTY / "duplicate-columns.csv"))
    assert any("the header repeats x: Spark named those columns x0, x1" in n for n in twice.manifest["notes"])
    dotted = ingest("dotted", str(DIRTY / "dotted-columns.csv"), label="feat.one")
    assert dotted.manifest["label_balance"] == {"1": 1, "3": 1, "5": 1}
    # The ingested name is a Spark SQL view of its latest version.
    assert nbscale.spark().sql("SELECT COUNT(*) AS n FROM dotted").first()["n"] == 3


def test_short_long_quoted_and_mistyped_rows_add_up_with_their_reasons():
    result = ingest("rows", str(DIRTY / "rows.csv"), label="label")
    assert result.manifest["counts"] == {"read": 12, "loaded": 9, "quarantined": 3}
    types = dict(map(tuple, result.manifest["schema"]))
    assert types["id"] == "int" and types["price"] == "double"  # one 'oops' does not make the column text
    reasons = sorted(r["reason"] for r in result.dataset.quarantine.collect())
    assert reasons == ["long row (5 of 4 fields)", "short row (3 of 4 fields)", "type: price = 'oops' is not DOUBLE"]
    names = {r["name"] for r in result.dataset.df.collect()}
    assert {"pear, green", 'lime "sour"'} <= names  # a quoted separator and doubled quotes (RFC 4180) stay in one field


def test_image_folder_from_a_mac_archive_with_empty_and_truncated_files():
    """The first file is truncated (the dataset's size comes from the first image that decodes), one is
    empty (Spark's scan skips 0-byte files: quarantined here), `._1.png` is macOS metadata (skipped, said)."""
    result = ingest("macpets", str(DIRTY / "images"), label="label")
    m = result.manifest
    assert m["counts"] == {"read": 6, "loaded": 4, "quarantined": 2} and m["image_shape"] == [6, 8, 1]
    reasons = sorted(r["reason"] for r in result.dataset.quarantine.collect())
    assert reasons == ["empty file (0 bytes)", "not a readable image (OSError)"]
    assert any("skipped 1 macOS metadata file(s) (._*, e.g. cat/._1.png)" in n for n in m["notes"])
    with pytest.raises(NbscaleError, match=r"None of the first 2 images decodes \(0-truncated.png"):
        ingest("nothing", _only_broken_images())


def _only_broken_images() -> str:
    import tempfile

    folder = Path(tempfile.mkdtemp()) / "broken"
    (folder / "cat").mkdir(parents=True)
    shutil.copy(DIRTY / "images" / "cat" / "0-truncated.png", folder / "cat")
    (folder / "cat" / "x.png").write_bytes(b"not a png")
    return str(folder)


def test_a_truncated_manifest_is_named_and_blocks_nothing(tmp_path):
    first = ingest("sales", str(DIRTY / "bom-crlf.csv"), label="label")
    broken = store.root() / "sales" / "v2"
    broken.mkdir()
    shutil.copy(DIRTY / "truncated-manifest.json", broken / "manifest.json")
    listed = {row["dataset"]: row for row in nbscale.ingest.datasets()}
    assert listed["sales@v1"]["rows"] == 2 and listed["sales@v2"]["format"] == "damaged"
    assert "sales@v2" in listed["sales@v2"]["source"] and "manifest" in listed["sales@v2"]["source"]
    with pytest.raises(store.BrokenVersion, match=r"sales@v2 cannot be read: .* The newest readable version is sales@v1\."):
        nbscale.ingest.dataset("sales")  # never a silent step back to v1
    assert nbscale.ingest.dataset("sales@v1").df.count() == 2
    again = ingest("sales", str(DIRTY / "bom-crlf.csv"), label="label")
    assert again.dataset.version == 3 and first.dataset.version == 1


def test_paths_with_spaces_quoted_or_one_per_line(tmp_path):
    folder = tmp_path / "my data"
    folder.mkdir()
    for name in ("a b.csv", "c.csv"):
        (folder / name).write_text("x,label\n1,0\n2,1\n")
    quoted = ingest("spaced", f'"{folder}/a b.csv" "{folder}/c.csv"')
    assert quoted.manifest["counts"]["loaded"] == 4
    lines = ingest("spaced", f"{folder}/a b.csv\n{folder}/c.csv\n")
    assert lines.manifest["counts"]["loaded"] == 4
    with pytest.raises(NbscaleError, match="unclosed quote"):
        ingest("spaced", f'"{folder}/a b.csv')
