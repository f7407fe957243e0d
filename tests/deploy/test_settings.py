"""panreduce.settings: one typed model for every PANREDUCE_* variable, the only place that
reads them, and the generated table in docs/configuration.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from panreduce.settings import Settings, SettingsError, get_settings, settings_for

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NAME = re.compile(r"PANREDUCE_[A-Z0-9_]*[A-Z0-9]\b")
# os.environ / os.getenv on a line naming a variable, or a mapping looked up by one
DIRECT_READ = re.compile(r"(os\.environ|getenv).*PANREDUCE_|(\.get\(|\[|\benv\()\s*[\"']PANREDUCE_")


def _sources() -> list[Path]:
    out = []
    for base in (ROOT / "services", ROOT / "gateway"):
        out += [
            p
            for p in base.rglob("*.py")
            if "/tests/" not in str(p) and "/v1/" not in str(p) and p.name != "settings.py"
        ]
    return out


def test_every_variable_named_in_the_code_is_in_the_model():
    fields = {Settings.env_name(n) for n in Settings.model_fields}
    unknown = {}
    for path in _sources():
        for name in NAME.findall(path.read_text()):
            if name not in fields and name != "PANREDUCE_S3":  # the prefix of S3Config's variables
                unknown.setdefault(name, str(path.relative_to(ROOT)))
    assert not unknown, f"PANREDUCE_* variables missing from panreduce.settings.Settings: {unknown}"


def test_only_the_settings_module_reads_the_environment():
    readers = {
        f"{p.relative_to(ROOT)}:{i}"
        for p in _sources()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if DIRECT_READ.search(line)
    }
    assert not readers, f"read PANREDUCE_* through panreduce.settings, not os.environ: {sorted(readers)}"


def test_docs_table_is_generated_from_the_model():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings-docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`{Settings.env_name(name)}`" in text


def test_values_are_typed_and_defaults_hold():
    s = Settings.from_env(
        {
            "PANREDUCE_MAX_RUNNING": "4",
            "PANREDUCE_DRAIN_SECONDS": "2.5",
            "PANREDUCE_ROUTES": " scan=h:1, ,tomography=h:2 ",
            "PANREDUCE_LOG_LEVEL": "debug",
            "PANREDUCE_ALLOWED_PREFIXES": "s3://b/{proposal}/,/data/{proposal}/",
            "PANREDUCE_TLS_CERT": "/etc/tls/cert.pem",
            "PANREDUCE_PORT": "",
            "HOME": "/ignored",
            "PANREDUCE_NOT_A_SETTING": "x",
        }
    )
    assert s.max_running == 4 and s.drain_seconds == 2.5 and s.log_level == "DEBUG"
    assert s.routes == ["scan=h:1", "tomography=h:2"]
    assert s.allowed_prefixes == ["s3://b/{proposal}/", "/data/{proposal}/"]
    assert s.tls_cert == Path("/etc/tls/cert.pem")
    assert s.port is None  # blank is unset
    d = Settings.from_env({})
    assert (d.max_running, d.max_streams, d.job_history, d.store, d.jwt_proposals_claim) == (
        1,
        200,
        1000,
        Path("panreduce-store"),
        "proposals",
    )
    assert d.db_spec is None and Settings.from_env({"PANREDUCE_DB": "j.sqlite"}).db_spec == "j.sqlite"
    assert (
        Settings.from_env({"PANREDUCE_DB": "j.sqlite", "PANREDUCE_DB_DSN": "postgresql://x"}).db_spec
        == "postgresql://x"
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PANREDUCE_MAX_RUNNING": "abc"}, "PANREDUCE_MAX_RUNNING=abc"),
        ({"PANREDUCE_MAX_RUNNING": "0"}, "PANREDUCE_MAX_RUNNING=0"),
        ({"PANREDUCE_PORT": "70000"}, "PANREDUCE_PORT=70000"),
        ({"PANREDUCE_LOG_FORMAT": "xml"}, "PANREDUCE_LOG_FORMAT=xml"),
        ({"PANREDUCE_MAX_STREAMS": "-1"}, "PANREDUCE_MAX_STREAMS=-1"),
        ({"PANREDUCE_DB_LEASE": "0"}, "PANREDUCE_DB_LEASE=0"),
        ({"PANREDUCE_RETENTION_DAYS": "soon"}, "PANREDUCE_RETENTION_DAYS=soon"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_variable(env, named):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_every_bad_value_is_named_and_secrets_are_not_echoed():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"PANREDUCE_PORT": "x", "PANREDUCE_METRICS_PORT": "y", "PANREDUCE_TOKEN": "ok-secret"})
    assert "PANREDUCE_PORT=x" in str(err.value) and "PANREDUCE_METRICS_PORT=y" in str(err.value)
    s = Settings.from_env({"PANREDUCE_TOKEN": "s3cr3t-value", "PANREDUCE_S3_SECRET_ACCESS_KEY": "k3y-value"})
    assert s.token is not None and s.token.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t" not in repr(s) and "k3y-value" not in repr(s)


def test_a_mapping_ignores_the_process_environment(monkeypatch):
    monkeypatch.setenv("PANREDUCE_MAX_RUNNING", "7")
    assert Settings.from_env({}).max_running == 1
    assert settings_for({"PANREDUCE_MAX_RUNNING": "3"}).max_running == 3
    assert get_settings().max_running == 7 and settings_for(None) is get_settings()


def test_read_once_and_kept_until_a_variable_changes(monkeypatch):
    monkeypatch.setenv("PANREDUCE_JOB_HISTORY", "12")
    first = get_settings()
    assert first.job_history == 12 and get_settings() is first
    monkeypatch.setenv("PANREDUCE_JOB_HISTORY", "13")
    assert get_settings().job_history == 13
    monkeypatch.setenv("PANREDUCE_JOB_HISTORY", "12")
    assert get_settings() is first


def test_pydantic_settings_and_the_mapping_path_agree(monkeypatch):
    env = {
        "PANREDUCE_MAX_RUNNING": "5",
        "PANREDUCE_ROUTES": "scan=a:1,saxs=b:2",
        "PANREDUCE_LOG_LEVEL": "warning",
        "PANREDUCE_PORT": "",
    }
    for k in [k for k in os.environ if k.startswith("PANREDUCE_")]:  # CI sets $PANREDUCE_DATA and others
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Settings() == Settings.from_env(env)


def test_consumers_follow_the_settings(tmp_path):
    from panreduce.s3 import S3Config
    from panreduce.serving import service_token_setting
    from panreduce_gateway.auth import Access

    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    assert service_token_setting(None, env={"PANREDUCE_SERVICE_TOKEN_FILE": str(token)}) == "0123456789abcdef0123"
    assert service_token_setting(None, required=False, env={}) is None
    access = Access.from_env({"PANREDUCE_ALLOWED_PREFIXES": "s3://b/{proposal}/, /d/{proposal}/"})
    assert access.prefixes == ["s3://b/{proposal}/", "/d/{proposal}/"] and not access.enabled
    c = S3Config.from_env(
        {
            "PANREDUCE_S3_ENDPOINT": "https://s3.example.org",
            "PANREDUCE_S3_ACCESS_KEY_ID": "a",
            "PANREDUCE_S3_SECRET_ACCESS_KEY": "b",
            "PANREDUCE_S3_CONCURRENCY": "3",
        }
    )
    assert c is not None and c.concurrency == 3 and c.endpoint == "https://s3.example.org"
    assert S3Config.from_env({"PANREDUCE_MAX_RUNNING": "2"}) is None


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PANREDUCE_")}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env={**clean, **env})


def test_a_service_with_a_bad_variable_stops_at_start_naming_it():
    done = _run([str(BIN / "panreduce-service"), "scan", "--insecure"], PANREDUCE_PORT="fifty")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PANREDUCE_PORT=fifty" in lines[0], done.stderr


def test_the_cli_with_a_bad_variable_is_one_line_naming_it():
    done = _run([str(BIN / "panreduce"), "jobs", "list", "--gateway", "127.0.0.1:1"], PANREDUCE_MAX_ATTEMPTS="many")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PANREDUCE_MAX_ATTEMPTS=many" in lines[0], done.stderr


def test_the_cli_takes_its_defaults_from_the_settings():
    """Flags left out come from the settings (after parsing): the gateway named by
    $PANREDUCE_GATEWAY is the one called; without it there is none."""
    done = _run([str(BIN / "panreduce"), "jobs", "list"], PANREDUCE_GATEWAY="127.0.0.1:9")
    assert done.returncode == 4 and "127.0.0.1:9" in done.stderr, done.stderr
    done = _run([str(BIN / "panreduce"), "jobs", "list"])
    assert done.returncode == 2 and "no gateway given" in done.stderr, done.stderr
    done = _run([str(BIN / "panreduce"), "jobs", "list", "--gateway", "127.0.0.1:7"], PANREDUCE_GATEWAY="127.0.0.1:9")
    assert "127.0.0.1:7" in done.stderr and "127.0.0.1:9" not in done.stderr, "the flag wins"


def test_every_variable_the_chart_and_images_set_is_a_setting():
    """What the chart's pods and the Containerfiles set is read by the model (a typo there
    would otherwise be silently ignored). The Helm test pod's own script is not a server."""
    import yaml
    from deploy_support import CHART, render_chart

    fields = {Settings.env_name(n) for n in Settings.model_fields}
    features = yaml.safe_load((CHART / "ci" / "all-features-values.yaml").read_text())
    set_by = {}
    for docs in (render_chart(), render_chart(features)):
        for d in docs:
            spec = d.get("spec", {}).get("template", {}).get("spec", {}) or d.get("spec", {})
            if "helm.sh/hook" in d.get("metadata", {}).get("annotations", {}):
                continue
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                for e in c.get("env", []):
                    if e["name"].startswith("PANREDUCE_"):
                        set_by.setdefault(e["name"], d["metadata"]["name"])
    for cf in ("images/service/Containerfile", "images/gateway/Containerfile", "images/web/Containerfile"):
        for name in NAME.findall(
            "\n".join(
                line
                for line in (ROOT / cf).read_text().splitlines()
                if line.lstrip().startswith("ENV") or line.startswith("    PANREDUCE_")
            )
        ):
            set_by.setdefault(name, cf)
    assert {"PANREDUCE_STORE", "PANREDUCE_ROUTES", "PANREDUCE_TECHNIQUE"} <= set(set_by)
    unknown = {n: where for n, where in set_by.items() if n not in fields}
    assert not unknown, f"set but not a setting: {unknown}"


def test_a_misspelt_variable_is_named_in_a_warning_not_ignored_silently():
    from panreduce.settings import unknown_variables

    assert unknown_variables(
        {"PANREDUCE_MAX_RUNING": "2", "PANREDUCE_MAX_RUNNING": "2", "PANREDUCE_S3_PORT": "1", "HOME": "/root"}
    ) == ["PANREDUCE_MAX_RUNING"]
    code = "from panreduce.settings import get_settings; print(get_settings().max_running)"
    done = _run([sys.executable, "-c", code], PANREDUCE_MAX_RUNING="2", PANREDUCE_TEST_PG_DSN="postgresql://x")
    assert done.returncode == 0 and done.stdout.strip() == "1"
    assert "PANREDUCE_MAX_RUNING" in done.stderr and "PANREDUCE_TEST_PG_DSN" not in done.stderr
    assert _run([sys.executable, "-c", code], PANREDUCE_MAX_RUNNING="2").stderr == ""


def test_the_settings_load_no_grpc():
    code = "import sys, panreduce.settings; assert 'grpc' not in sys.modules, 'panreduce.settings loads grpc'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
