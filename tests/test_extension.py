"""`%load_ext nbscale`, `%nbscale`, the settings and their one-line errors, in a real IPython shell."""
import json
import os

import pytest
from conftest import free_port, run_python
from traitlets.config import Config

from nbscale.config import Nbscale
from nbscale.errors import SettingError

HEAVY = ("tensorflow", "pyspark", "mlflow", "petastorm", "ipywidgets", "pandas", "pyarrow")


def test_load_ext_imports_no_engine():
    # A fresh interpreter: what %load_ext imports is only observable once per process.
    out = run_python(
        "import sys, json\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "before = set(sys.modules)\n"
        "shell.run_line_magic('load_ext', 'nbscale')\n"
        "print(json.dumps({'loaded': 'nbscale' in shell.extension_manager.loaded,\n"
        "                  'new': sorted(set(sys.modules) - before)}))\n"
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["loaded"]
    heavy = [m for m in report["new"] if m.split(".")[0] in HEAVY]
    assert heavy == [], f"%load_ext imported {heavy}"


def test_magic_help_lists_the_flags(ip):
    doc = ip.find_line_magic("nbscale").__doc__
    for flag in ("connect", "--master", "--tracking-uri", "--data-dir", "start", "stop"):
        assert flag in doc


def test_every_magic_answers_h_and_help_with_its_usage(ip, capsys):
    """`%serve -h` was "UsageError: unrecognized arguments: -h"; now every magic prints what `%serve?` shows."""
    magics = {kind: sorted(name for name, fn in table.items() if getattr(fn, "__module__", "").startswith("nbscale."))
              for kind, table in ip.magics_manager.magics.items()}
    assert {"ingest", "serve", "register", "jobs", "pool", "nbscale"} <= set(magics["line"])
    assert {"train", "tune", "step"} <= set(magics["cell"])
    for kind, names in magics.items():
        for name in names:
            for flag in ("-h", "--help"):
                if kind == "line":
                    answer = ip.run_line_magic(name, flag)
                else:
                    answer = ip.run_cell_magic(name, flag, "this cell must not run")
                printed = capsys.readouterr().out
                assert answer is None and printed.lstrip().startswith(f"%{name}"), (name, flag, printed[:200])


def test_status_card_says_where_work_goes(ip, settings):
    from importlib.metadata import version

    from nbscale.session import active_spark, find_java

    card = ip.run_line_magic("nbscale", "")
    text, html = repr(card), card._repr_html_()
    assert card.spark_started == (active_spark() is not None)
    assert settings.master in text and settings.tracking_uri in text and settings.data_dir in text
    assert card.versions["pyspark"] == version("pyspark") and card.versions["tf-keras"] == version("tf-keras")
    assert f"tensorflow {version('tensorflow')}" in text
    assert "<table>" in html and "MLflow" in html
    assert card.java == "{1} ({0})".format(*find_java())


def test_embedded_defaults(settings):
    fresh = Nbscale()
    assert fresh.master == "local[*]"
    assert fresh.host == "127.0.0.1"
    assert fresh.data_dir == os.environ["NBSCALE_DATA_DIR"]
    assert fresh.tracking_uri == f"sqlite:///{fresh.data_dir}/mlflow.db"


def test_environment_then_config_precedence(monkeypatch):
    monkeypatch.setenv("NBSCALE_MASTER", "local[3]")
    monkeypatch.setenv("NBSCALE_SPARK_CONF", json.dumps({"spark.executor.memory": "3g"}))
    assert Nbscale().master == "local[3]"
    assert Nbscale().spark_conf == {"spark.executor.memory": "3g"}
    configured = Nbscale(config=Config({"Nbscale": {"master": "local[2]"}}))
    assert configured.master == "local[2]"


def test_config_magic_reads_and_sets(ip, settings):
    ip.run_line_magic("config", "Nbscale.master = 'local[2]'")
    try:
        assert settings.master == "local[2]"
        assert ip.run_line_magic("config", "Nbscale.master") == "local[2]"
    finally:
        ip.config.Nbscale.pop("master")  # %config also keeps the value for a %reload_ext


def test_bad_master_value_is_refused_in_one_line(ip, settings):
    with pytest.raises(SettingError, match=r"^Nbscale\.master = 'bogus' is not a Spark master URL: use local\[\*\]"):
        settings.master = "bogus"
    assert settings.master == "local[*]"


@pytest.mark.parametrize("master", ["spark://nowhere.invalid:1", "spark://127.0.0.1:{port}"])
def test_unreachable_master_is_one_line_and_keeps_the_old_one(ip, settings, capsys, master):
    master = master.format(port=free_port())
    result = ip.run_cell(f"%nbscale connect --master {master}")
    shown = capsys.readouterr().out.strip()
    assert isinstance(result.error_in_exec, SettingError)
    assert len(shown.splitlines()) == 1, shown
    assert f"Nbscale.master = '{master}'" in shown and "%nbscale connect --master" in shown
    assert "Traceback" not in shown
    assert settings.master == "local[*]"


def test_dead_tracking_server_is_refused(ip, settings, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    result = ip.run_cell(f"%nbscale connect --tracking-uri {uri}")
    assert isinstance(result.error_in_exec, SettingError)
    assert f"Nbscale.tracking_uri = '{uri}': no MLflow server answers" in capsys.readouterr().out
    assert settings.tracking_uri.startswith("sqlite:///")


def test_connect_with_nothing_says_what_to_give(ip, capsys):
    result = ip.run_cell("%nbscale connect")
    assert "give --master URL" in str(result.error_in_exec)


def test_connect_moves_master_and_default_store_follows_data_dir(ip, settings, tmp_path):
    card = ip.run_line_magic("nbscale", f"connect --master local[2] --data-dir {tmp_path}")
    assert settings.master == "local[2]" and card.master == "local[2]"
    assert settings.data_dir == str(tmp_path)
    assert settings.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"


def test_chosen_tracking_uri_stays_when_data_dir_moves(settings, tmp_path):
    settings.tracking_uri = "http://127.0.0.1:5000"
    settings.data_dir = str(tmp_path)
    assert settings.tracking_uri == "http://127.0.0.1:5000"


def test_bad_spark_conf_env_names_the_variable(monkeypatch):
    monkeypatch.setenv("NBSCALE_SPARK_CONF", "spark.executor.memory=4g")
    with pytest.raises(SettingError, match="NBSCALE_SPARK_CONF=.* is not a JSON object"):
        _ = Nbscale().spark_conf


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(SettingError, match="is a file: point it at a directory"):
        Nbscale(data_dir=str(afile))


def test_cluster_kernel_takes_master_from_its_variable(monkeypatch):
    from nbscale.session import check_master

    monkeypatch.setenv("NBSCALE_KERNEL", "cluster")
    monkeypatch.setenv("NBSCALE_CLUSTER_MASTER", "spark://head:7077")
    monkeypatch.setenv("NBSCALE_MASTER", "local[2]")  # the local kernel's variable does not apply
    assert Nbscale().master == "spark://head:7077"
    monkeypatch.delenv("NBSCALE_CLUSTER_MASTER")
    assert Nbscale().master == ""
    with pytest.raises(SettingError, match="NBSCALE_CLUSTER_MASTER"):
        check_master(Nbscale().master)


def test_yarn_without_hadoop_conf_says_what_to_set(monkeypatch):
    from nbscale.session import check_master

    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    with pytest.raises(SettingError, match="HADOOP_CONF_DIR or YARN_CONF_DIR"):
        check_master("yarn")


def test_missing_java_is_one_clear_line():
    # A real interpreter with no java on PATH and no JAVA_HOME, asking for Spark.
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = "/nonexistent"
    out = run_python("import nbscale; nbscale.spark()", env=env)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1
    assert last.startswith("nbscale.errors.JavaMissingError: Java was not found")
    assert "apt-get install openjdk-17-jre-headless" in last and "JAVA_HOME" in last
    assert "py4j" not in out.stderr.lower()


def test_java_home_without_java_is_named():
    env = dict(os.environ, JAVA_HOME="/nonexistent/jdk")
    out = run_python("import nbscale; nbscale.spark()", env=env)
    assert "JAVA_HOME=/nonexistent/jdk has no bin/java" in out.stderr.strip().splitlines()[-1]


def test_unload_removes_the_settings_from_config(ip):
    ip.run_line_magic("unload_ext", "nbscale")
    try:
        assert all(type(c).__name__ != "Nbscale" for c in ip.configurables)
    finally:
        ip.run_line_magic("load_ext", "nbscale")
    assert any(type(c).__name__ == "Nbscale" for c in ip.configurables)
