"""The Spark session nbscale starts: real JVM, loopback only, lazy, restarted on new settings."""
import gzip
import ipaddress
from collections import Counter

import psutil
import pytest

import nbscale
from nbscale.errors import SparkJobError, SparkStartError, spark_errors
from nbscale.session import active_spark, driver_log, spark_conf, stop_spark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    session = nbscale.spark()
    yield session
    stop_spark()


def _jvm_listening_addresses() -> set[str]:
    jvms = [p for p in psutil.Process().children(recursive=True) if p.name() == "java"]
    assert jvms, "no Spark JVM child process found"
    found = set()
    for jvm in jvms:
        for conn in jvm.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                address = ipaddress.ip_address(conn.laddr.ip)
                found.add(str(getattr(address, "ipv4_mapped", None) or address))
    return found


def test_session_is_reused_and_bound_to_loopback(spark):
    assert nbscale.spark() is spark
    assert spark.sparkContext.master == "local[*]"
    assert spark.sparkContext.uiWebUrl.startswith("http://127.0.0.1:")
    assert spark.conf.get("spark.driver.host") == "127.0.0.1"
    # The UI, the block manager and the Py4J gateway listen on loopback only.
    assert _jvm_listening_addresses() == {"127.0.0.1"}


def test_digits_are_the_real_uci_set(spark):
    digits = nbscale.datasets.digits()
    assert digits.columns[-1] == "label" and len(digits.columns) == 65
    by_spark = {r["label"]: r["count"] for r in digits.groupBy("label").count().collect()}
    # Count the labels again without Spark, straight from the gzipped CSV.
    with gzip.open(nbscale.datasets.digits_csv(), "rt") as f:
        by_hand = Counter(int(float(line.rsplit(",", 1)[1])) for line in f if line.strip())
    assert by_spark == dict(by_hand)
    assert sum(by_spark.values()) == 1797
    assert digits.agg({"pixel_20": "max"}).first()[0] == 16.0


def test_status_card_shows_the_running_session(spark):
    card = nbscale.status()
    assert card.spark_started and card.spark_app_id == spark.sparkContext.applicationId
    assert card.spark_ui == spark.sparkContext.uiWebUrl
    assert f'href="{card.spark_ui}"' in card._repr_html_()


def test_jvm_start_banner_goes_to_the_driver_log(spark):
    text = driver_log().read_text()
    assert "Setting default log level" in text or "WARN" in text


def test_spark_error_becomes_one_line(spark, tmp_path):
    missing = tmp_path / "nothing-here.csv"
    with pytest.raises(SparkJobError) as raised:
        with spark_errors("Reading the source", fix="Check the path."):
            spark.read.csv(str(missing)).count()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("Reading the source failed: ") and "nothing-here.csv" in message
    assert message.endswith("Check the path.") and "at org.apache" not in message


def test_a_gateway_error_raised_while_an_interrupt_unwinds_is_the_interrupt():
    """Py4J closes an interrupted connection; PySpark's clean-up call then fails with "Answer from Java side
    is empty". The cell must end as the user's interrupt, not as a Spark failure (seen in a real kernel)."""
    from py4j.protocol import Py4JNetworkError

    def cleanup_fails_during_interrupt():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise Py4JNetworkError("Answer from Java side is empty")  # noqa: B904 - as PySpark's clean-up raises it

    with pytest.raises(KeyboardInterrupt):
        with spark_errors("Ingesting big"):
            cleanup_fails_during_interrupt()
    with pytest.raises(SparkJobError, match="Ingesting big failed: Answer from Java side is empty"):
        with spark_errors("Ingesting big"):
            raise Py4JNetworkError("Answer from Java side is empty")  # no interrupt: a real gateway failure


def test_new_master_restarts_the_session(spark, settings):
    nbscale.connect(master="local[2]")
    assert active_spark() is None  # the old session stopped; the next use starts the new one
    moved = nbscale.spark()
    try:
        assert moved.sparkContext.master == "local[2]"
        assert moved.sparkContext.defaultParallelism == 2
        assert moved.range(100).count() == 100
    finally:
        nbscale.connect(master="local[*]")
        nbscale.spark()  # leave the module's session running for the tests after this one


def test_user_spark_conf_reaches_the_session(settings):
    settings.spark_conf = {"spark.sql.shuffle.partitions": "3"}
    assert spark_conf()["spark.sql.shuffle.partitions"] == "3"
    assert nbscale.spark().conf.get("spark.sql.shuffle.partitions") == "3"


def test_bad_driver_memory_is_one_line_and_recoverable(settings):
    stop_spark()
    settings.driver_memory = "2x"
    with pytest.raises(SparkStartError) as raised:
        nbscale.spark()
    message = str(raised.value)
    assert "Invalid maximum heap size: -Xmx2x" in message and "\n" not in message
    settings.driver_memory = "2g"
    assert nbscale.spark().range(3).count() == 3
