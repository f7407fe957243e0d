"""Provenance: what made an output — the request, the parameters, the software
versions and the checksums of the inputs — recorded inside every output.

NeXus/HDF5 outputs get an NXnote named ``provenance`` in each NXentry (or at the root
when there is none); CSV/text files get ``#`` comment lines at the top; PNG files a
``tEXt`` chunk; every job also publishes ``provenance.json`` beside its outputs,
which adds the outputs' own checksums.
"""

from __future__ import annotations

import json
import platform
import socket
import struct
import sys
import zlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py

from panreduce import nexus
from panreduce.kit.technique import Inputs, OutputSpec

SCHEMA = "panreduce.provenance/1"
HDF5_FORMATS = {"nexus", "nxcansas", "hdf5", "cxi", "nxtomoproc"}
TEXT_FORMATS = {"csv", "tsv", "txt", "ort", "dat", "xy"}
XML_FORMATS = {"cansas-xml", "cansas_xml", "xml"}
CANSAS_XML_NS = "urn:cansas1d:1.1"
CORE_PACKAGES = ("panreduce-common", "numpy", "h5py", "grpcio", "protobuf", "pydantic")


def software_versions(distributions: Iterable[str]) -> dict[str, str]:
    """Versions of the named distributions and everything they require (installed ones)."""
    versions: dict[str, str] = {"python": platform.python_version()}
    todo = list(dict.fromkeys([*CORE_PACKAGES, *distributions]))
    seen: set[str] = set()
    while todo:
        name = todo.pop(0)
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        versions[dist.metadata["Name"]] = dist.version
        if key.startswith("panreduce"):  # follow our own members' requirements one level
            for req in dist.requires or []:
                if "extra ==" in req:
                    continue
                dep = req.split(";")[0].split("[")[0]
                for sep in "<>=!~ (":
                    dep = dep.split(sep)[0]
                todo.append(dep.strip())
    return dict(sorted(versions.items(), key=lambda kv: (kv[0] != "python", kv[0].lower())))


def build(
    *,
    job_id: str,
    technique: str,
    technique_version: str,
    technique_distribution: str,
    request: Mapping[str, Any],
    parameters: Mapping[str, Any],
    inputs: Inputs,
    started: datetime,
    finished: datetime | None = None,
) -> dict[str, Any]:
    """The provenance record of one job (JSON-serialisable)."""
    return {
        "schema": SCHEMA,
        "id": f"prov-{job_id}",
        "job_id": job_id,
        "technique": {"name": technique, "version": technique_version},
        "request": dict(request),
        "parameters": dict(parameters),
        "inputs": [{"uri": f.uri, "name": f.name, "size": f.size, "sha256": f.sha256} for f in inputs.files],
        "software": software_versions([technique_distribution]),
        "host": {"name": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "started": started.astimezone(UTC).isoformat(),
        "finished": (finished or datetime.now(UTC)).astimezone(UTC).isoformat(),
    }


def embed(record: Mapping[str, Any], output: OutputSpec) -> None:
    """Write the record into one output file, by its format."""
    text = json.dumps(record, sort_keys=True, default=str)
    fmt = output.format.lower()
    path = output.path
    if fmt in HDF5_FORMATS or path.suffix in (".h5", ".hdf5", ".nxs", ".nx", ".cxi"):
        _embed_hdf5(path, record["id"], text)
    elif fmt in XML_FORMATS or path.suffix == ".xml":
        _embed_xml(path, record, text)
    elif fmt in TEXT_FORMATS:
        _embed_text(path, record, text)
    elif fmt == "png":
        _embed_png(path, "panreduce:provenance", text)
    elif fmt == "json":
        _embed_json(path, text)


def _embed_hdf5(path: Path, prov_id: str, text: str) -> None:
    with h5py.File(path, "r+") as f:
        entries = [g for g in f.values() if isinstance(g, h5py.Group) and nexus.nx_class(g) == "NXentry"]
        for parent in entries or [f]:
            if "provenance" in parent:
                del parent["provenance"]
            note = nexus.write_nxnote(
                parent,
                "provenance",
                type="application/json",
                data=text,
                description="PaNReduce provenance: request, parameters, software versions and input checksums",
            )
            note.attrs["provenance_id"] = prov_id
        f.attrs["panreduce_provenance_id"] = prov_id


def _embed_text(path: Path, record: Mapping[str, Any], text: str) -> None:
    body = path.read_bytes()
    header = (
        f"# provenance_id: {record['id']} (technique {record['technique']['name']} "
        f"{record['technique']['version']}, job {record['job_id']})\n# provenance: {text}\n"
    ).encode()
    if body.startswith(b"# # ORSO"):
        # ORSO text: its first line must stay first; "# # " lines are comments to its YAML header
        first, _, rest = body.partition(b"\n")
        header = b"".join(b"# # " + line[2:] + b"\n" for line in header.splitlines())
        body, header = rest, first + b"\n" + header
    tmp = path.with_name(path.name + ".prov")
    tmp.write_bytes(header + body)
    tmp.replace(path)


def _embed_xml(path: Path, record: Mapping[str, Any], text: str) -> None:
    """canSAS 1-D XML: a SASprocess in every SASentry (before its SASnotes, as the v1.1
    schema orders them) named ``panreduce-<technique>``, with the job's date, the
    technique's version as a term and the record as its SASprocessnote. Other XML: the
    record as a comment after the declaration (with "--" escaped, which comments forbid)."""
    import xml.etree.ElementTree as ET

    body = path.read_bytes()
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return
    ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    if ns != CANSAS_XML_NS:
        comment = f"<!-- panreduce provenance: {text.replace('--', '- -')} -->\n".encode()
        head, sep, rest = body.partition(b"?>")
        path.write_bytes(head + sep + b"\n" + comment + rest if sep else comment + body)
        return
    ET.register_namespace("", ns)
    q = f"{{{ns}}}"
    for entry in root.iter(q + "SASentry"):
        process = ET.Element(q + "SASprocess")
        ET.SubElement(process, q + "name").text = nexus.program_name(record["technique"]["name"])
        ET.SubElement(process, q + "date").text = str(record.get("finished") or record.get("started") or "")
        ET.SubElement(process, q + "description").text = (
            f"PaNReduce provenance {record['id']} (job {record['job_id']}): request, parameters, "
            "software versions and input checksums"
        )
        term = ET.SubElement(process, q + "term", name="version")
        term.text = str(record["technique"]["version"])
        ET.SubElement(process, q + "SASprocessnote", name="provenance").text = text
        children = list(entry)
        notes = [i for i, c in enumerate(children) if c.tag == q + "SASnote"]
        entry.insert(notes[0] if notes else len(children), process)
    tmp = path.with_name(path.name + ".prov")
    ET.ElementTree(root).write(tmp, encoding="UTF-8", xml_declaration=True)
    tmp.replace(path)


def _embed_png(path: Path, key: str, text: str) -> None:
    data = path.read_bytes()
    end = data.rfind(b"IEND")
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or end < 4:
        return
    payload = key.encode("latin-1") + b"\x00" + text.encode("latin-1", "replace")
    chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + payload) & 0xFFFFFFFF)
    path.write_bytes(data[: end - 4] + chunk + data[end - 4 :])


def _embed_json(path: Path, text: str) -> None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(doc, dict) and "provenance" not in doc:
        doc["provenance"] = json.loads(text)
        path.write_text(json.dumps(doc, indent=1, default=str))


def read_png_text(path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG (for tests and tools)."""
    data = path.read_bytes()
    pos, out = 8, {}
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt":
            k, _, v = body.partition(b"\x00")
            out[k.decode("latin-1")] = v.decode("latin-1")
        pos += 12 + length
    return out
