"""Provenance in XML outputs: canSAS 1-D XML gets a SASprocess per SASentry (schema
order kept); any other XML a comment, with '--' escaped."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from panreduce import provenance

RECORD = {
    "id": "prov-j1",
    "job_id": "j1",
    "technique": {"name": "sans", "version": "0.1.0"},
    "finished": "2026-12-02T18:00:00+00:00",
    "note": "a -- b",
}
CANSAS = """<?xml version="1.0" encoding="UTF-8"?>
<SASroot xmlns="urn:cansas1d:1.1" version="1.1">
 <SASentry><Title>a</Title><Run>1</Run><SASdata/><SASsample/><SASinstrument/><SASnote/></SASentry>
 <SASentry><Title>b</Title><Run>2</Run><SASdata/><SASsample/><SASinstrument/></SASentry>
</SASroot>
"""


def test_cansas_xml_gets_a_sasprocess_before_its_notes(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text(CANSAS)
    text = json.dumps(RECORD)
    provenance._embed_xml(path, RECORD, text)
    ns = "{urn:cansas1d:1.1}"
    root = ET.parse(path).getroot()
    assert root.tag == ns + "SASroot"
    assert path.read_text().count("ns0:") == 0  # the default namespace kept
    for entry in root.findall(ns + "SASentry"):
        tags = [c.tag.removeprefix(ns) for c in entry]
        assert tags.count("SASprocess") == 1
        if "SASnote" in tags:
            assert tags.index("SASprocess") == tags.index("SASnote") - 1
        else:
            assert tags[-1] == "SASprocess"
        p = entry.find(ns + "SASprocess")
        assert p.findtext(ns + "name") == "panreduce-sans"
        assert p.findtext(ns + "date") == RECORD["finished"]
        assert p.find(ns + "term").text == "0.1.0"
        assert json.loads(p.findtext(ns + "SASprocessnote")) == RECORD


def test_other_xml_gets_a_comment_without_double_dashes(tmp_path):
    path = tmp_path / "y.xml"
    path.write_text('<?xml version="1.0"?>\n<doc><a/></doc>\n')
    provenance._embed_xml(path, RECORD, json.dumps(RECORD))
    body = path.read_text()
    assert body.startswith('<?xml version="1.0"?>')
    comment = body[body.index("<!--") + 4 : body.index("-->")]
    assert "--" not in comment and "prov-j1" in comment
    assert ET.fromstring(body).tag == "doc"  # still well-formed


def test_unparseable_xml_is_left_alone(tmp_path):
    path = tmp_path / "z.xml"
    path.write_bytes(b"<not xml")
    provenance._embed_xml(path, RECORD, "{}")
    assert path.read_bytes() == b"<not xml"
