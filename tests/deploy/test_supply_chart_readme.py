"""charts/panreduce/README.md is generated from values.yaml (scripts/chart-readme.py, `make chart-readme`)."""

from __future__ import annotations

import pytest
from deploy_support import CHART
from test_deploy_images import load_script


@pytest.fixture(scope="module")
def readme():
    return load_script("chart-readme")


def test_committed_readme_is_up_to_date(readme):
    assert (CHART / "README.md").read_text() == readme.render(), "run `make chart-readme`"


def test_every_param_line_is_a_row_with_its_default(readme):
    text = (CHART / "values.yaml").read_text()
    params = {m.group(1) for line in text.splitlines() if (m := readme.PARAM.match(line))}
    keys = {key for _, body in readme.rows(text) for key, _, _ in body}
    assert params and params <= keys
    out = (CHART / "README.md").read_text()
    assert "| `podSecurity.arbitraryUid` |" in out and "| `false` |" in out


VALUES = """\
# -- images ---------------------------------------------------------------
image:
  # prefix of every image: <registry>/<name>
  registry: localhost/x
  pullPolicy: IfNotPresent
    # (nothing: no comment)
other: 3
web:
  ## @param web.scratch.sizeLimit The /tmp emptyDir
  ## @param web.scratch.medium Memory or disk
  scratch: {sizeLimit: 256Mi, medium: ""}
  ## @param web.port HTTP port | of the page
  # this plain comment loses to the @param line
  port: 8080
  banner: |
    inner: not a key
# -- the gateway ---------------------------------------------------------
gateway:
  # a deeper comment closing the image block
top: 1
"""


def _chart(tmp_path, values: str):
    (tmp_path / "values.yaml").write_text(values)
    (tmp_path / "Chart.yaml").write_text("name: x\nversion: 0.1.0\nappVersion: '1'\ndescription: A chart.\n")
    return tmp_path


def test_rows_from_param_lines_comments_and_flow_mappings(readme):
    sections = dict(readme.rows(VALUES))
    assert list(sections) == ["Images"]
    rows = {key: (desc, default) for key, desc, default in sections["Images"]}
    assert rows["image.registry"] == ("prefix of every image: &lt;registry&gt;/&lt;name&gt;", '`"localhost/x"`')
    assert rows["web.scratch.sizeLimit"] == ("The /tmp emptyDir", '`"256Mi"`')
    assert rows["web.scratch.medium"] == ("Memory or disk", '`""`')
    assert rows["web.port"] == ("HTTP port \\| of the page", "`8080`")
    # no description: no row; a comment deeper than the next key is not that key's
    assert {"image.pullPolicy", "other", "web.banner", "web.banner.inner", "gateway", "top"}.isdisjoint(rows)


def test_check_finds_a_stale_readme_and_unknown_params_are_refused(readme, tmp_path, monkeypatch):
    chart = _chart(tmp_path, VALUES)
    monkeypatch.setattr(readme, "CHART", chart)
    (chart / "README.md").write_text(readme.render(chart))
    assert readme.main(["--check"]) == 0
    (chart / "values.yaml").write_text(VALUES.replace("prefix of every image", "the registry"))
    assert readme.main(["--check"]) == 1
    with pytest.raises(SystemExit, match=r"web.nope"):
        readme.rows(VALUES + "## @param web.nope A key that does not exist\n")


def test_the_packaged_chart_lints_and_renders(helm_cli, tmp_path):
    """scripts/chart-package.sh (CI, `make chart-package`): helm package, then lint --strict and
    render the .tgz; the README and the schema travel in the package."""
    import subprocess
    import tarfile

    from deploy_support import ROOT

    res = subprocess.run(
        [str(ROOT / "scripts" / "chart-package.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={"HELM_BIN": helm_cli, "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr
    assert "lint --strict passed" in res.stdout
    (pkg,) = tmp_path.glob("panreduce-*.tgz")
    with tarfile.open(pkg) as tar:
        names = set(tar.getnames())
        assert {"panreduce/README.md", "panreduce/values.schema.json"} <= names
        assert tar.extractfile("panreduce/README.md").read().decode() == (CHART / "README.md").read_text()
