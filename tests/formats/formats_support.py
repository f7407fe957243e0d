"""Checks of an output file against the formats' own rules, with real tools:

- the NeXus validator of ``nexusformat`` (``nxvalidate``; it ships the NXDL definitions,
  so it runs offline): application definitions (``validate_application``) and base
  classes (``validate_file``); its ERROR findings, each with the path it is about;
- the ``@default`` chain from the root to an NXdata whose ``@signal`` (and ``@axes``)
  name datasets that exist;
- every ``units`` attribute parses with pint, and the well-known fields have the
  dimension they must (pint reads "1/A" as per ampere and "a.u." as amu * year);
- NXcanSAS: ``SASsource/radiation`` within its enumeration, ``SASsample/name`` present;
- ORSO text: read back by orsopy, and its column units parse with pint.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from panreduce import nexus, nxcansas

# nexusformat matches a group of an application definition by its NX class when the
# definition gives it no fixed name, and only by the exact name otherwise; NXcanSAS names
# SAStransmission_spectrum "TRANSMISSION_SPECTRUM" with nameType="any", so every
# transmission spectrum is checked as a SASdata (and "lacks" Q and I). The canSAS_class
# attribute, which tells them apart, is not read. (nexusformat 2.1.0, NXDL v2026.01)
VALIDATOR_LIMITS = (
    (
        "NXcanSAS transmission spectrum checked as SASdata",
        re.compile(r"/[^/]+/(?P<group>[^/]+)/(Q|I): This required field is not in the NeXus file$"),
        lambda f, m, path: (
            nexus.read_text(f[path.rsplit("/", 1)[0]].attrs.get("canSAS_class")) == "SAStransmission_spectrum"
        ),
    ),
    (
        # A CXI 1.5 file (root @cxi_version) keeps, beside its entry_N, the dataset paths
        # the CrystFEL geometry names (photon_energy = /LCLS/photon_energy_eV), so that the
        # same .geom reads it: CXI admits them, NXroot admits only NXentry. cxi_findings
        # checks those groups (per-hit values, one per frame) instead.
        "CXI geometry paths beside the entries",
        re.compile(r"^/(?P<group>[^/]+): NXcollection is an invalid class in NXroot$"),
        lambda f, m, path: "cxi_version" in f.attrs and not m["group"].startswith("entry_"),
    ),
)

# dimensions that the well-known fields must have, whatever the unit
DIMENSIONS = {
    "Q": "1/[length]",
    "Qx": "1/[length]",
    "Qy": "1/[length]",
    "Qz": "1/[length]",
    "Qdev": "1/[length]",
    "lambda": "[length]",
    "wavelength": "[length]",
    "incident_wavelength": "[length]",
    "SDD": "[length]",
    "thickness": "[length]",
    "x_pixel_size": "[length]",
    "y_pixel_size": "[length]",
}
# strings that pint parses into something else than what writers mean by them
MISREAD = {
    "a.u.": "pint reads it as atomic mass unit * year; use '' (arbitrary units)",
    "A": "ampere in UDUNITS and pint; write 'angstrom'",
    "1/A": "per ampere in UDUNITS and pint; write '1/angstrom'",
}


def cansas_xml_schema() -> Path:
    """The canSAS 1-D XML v1.1 schema, as sasdata ships it."""
    import sasdata.dataloader.readers as readers

    return Path(readers.__file__).parent / "schema" / "cansas1d_v1_1.xsd"


def hdf5_outputs(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.is_file() and p.suffix != ".json" and h5py.is_hdf5(p)]


@functools.cache
def _registry():
    import pint

    return pint.UnitRegistry()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


def _run_validator(call) -> list[str]:
    """ERROR findings of one nexusformat validation, each as "<path>: <message>" (the
    validator logs the object it is looking at, then what is wrong with it)."""
    from nexusformat.nexus import validate

    logger = validate.logger
    saved = (logger.handlers[:], logger.level, logger.propagate)
    capture = _Capture()
    logger.handlers, logger.propagate = [capture], False
    logger.setLevel(logging.INFO)
    try:
        result = call(validate)
    finally:
        logger.handlers, logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])
    current, found = "", []
    for level, message in capture.records:
        head = re.match(r"\s*(?:[A-Za-z_]+: )?(?:[A-Za-z_]+: )?(/\S*)$", message)
        if head:
            current = head.group(1)
            continue
        if level == "ERROR" and message.strip():
            found.append(f"{current}: {message.strip()}")
    if result is None and not found:
        found.append("validator stopped without a result")
    return found


def _without_limits(path: Path, findings: list[str]) -> list[str]:
    kept = []
    with h5py.File(path, "r") as f:
        for finding in findings:
            where = finding.split(": ", 1)[0]
            known = False
            for _, pattern, applies in VALIDATOR_LIMITS:
                m = pattern.search(finding)
                if m and (where.rsplit("/", 1)[0] or "/") in f and applies(f, m, where):
                    known = True
            if not known:
                kept.append(finding)
    return kept


def cxi_findings(path: Path) -> list[str]:
    """What breaks the CXI 1.5 layout (cxi.org, as CrystFEL and Cheetah read it): root
    @cxi_version; entry_1/data_1/data (n_hits, ss, fs); result_1's nPeaks (n_hits) and
    peak lists (n_hits, max_peaks); instrument_1/source_1/energy (n_hits, J); every other
    top-level group (the geometry's own paths) only 1-D datasets of n_hits values with units."""
    found: list[str] = []
    with h5py.File(path, "r") as f:
        if "cxi_version" not in f.attrs:
            return ["/: no @cxi_version (not a CXI file)"]
        data = f.get("entry_1/data_1/data")
        if not isinstance(data, h5py.Dataset) or data.ndim != 3:
            return ["/entry_1/data_1/data: missing or not (n_hits, ss, fs)"]
        n = data.shape[0]
        res = f.get("entry_1/result_1")
        if not isinstance(res, h5py.Group) or not isinstance(res.get("nPeaks"), h5py.Dataset):
            found.append("/entry_1/result_1/nPeaks: missing")
        else:
            if res["nPeaks"].shape != (n,):
                found.append(f"/entry_1/result_1/nPeaks: shape {res['nPeaks'].shape}, not ({n},)")
            width = None
            for key in ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity"):
                ds = res.get(key)
                if not isinstance(ds, h5py.Dataset) or ds.ndim != 2 or ds.shape[0] != n:
                    found.append(f"/entry_1/result_1/{key}: missing or not (n_hits, max_peaks)")
                    continue
                width = width or ds.shape[1]
                if ds.shape[1] != width:
                    found.append(f"/entry_1/result_1/{key}: {ds.shape[1]} peaks per hit, not {width}")
            if width is not None and n and int(np.max(res["nPeaks"][()])) > width:
                found.append("/entry_1/result_1/nPeaks: more peaks than the peak lists hold")
        energy = f.get("entry_1/instrument_1/source_1/energy")
        if not isinstance(energy, h5py.Dataset) or energy.shape != (n,):
            found.append(f"/entry_1/instrument_1/source_1/energy: missing or not ({n},)")
        elif nexus.read_text(energy.attrs.get("units")) != "J":
            found.append("/entry_1/instrument_1/source_1/energy: units are not J")
        for key, group in f.items():
            if key.startswith("entry_") or not isinstance(group, h5py.Group):
                continue

            def visit(name: str, obj, top=key) -> None:
                if isinstance(obj, h5py.Dataset):
                    if obj.shape != (n,):
                        found.append(f"/{top}/{name}: shape {obj.shape}, not one value per hit ({n},)")
                    if not nexus.read_text(obj.attrs.get("units")):
                        found.append(f"/{top}/{name}: no units")

            group.visititems(visit)
    return found


def entries(path: Path) -> dict[str, str | None]:
    """NXentry/NXsubentry paths of the file -> their @definition (None without one)."""
    out: dict[str, str | None] = {}
    with h5py.File(path, "r") as f:
        for key, obj in f.items():
            if isinstance(obj, h5py.Group) and nexus.nx_class(obj) in ("NXentry", "NXsubentry"):
                d = obj.get("definition")
                out["/" + key] = nexus.read_text(d).strip() if isinstance(d, h5py.Dataset) else None
    return out


def application_findings(path: Path) -> list[str]:
    """Validator errors of every entry that names an application definition."""
    found = []
    for entry, definition in entries(path).items():
        if definition is None:
            continue
        errs = _run_validator(lambda v, e=entry: v.validate_application(str(path), path=e))
        found += [f"[{definition}] {e}" for e in _without_limits(path, errs)]
    return found


def base_class_findings(path: Path) -> list[str]:
    """Validator errors against the base classes, over the whole file."""
    return _without_limits(path, _run_validator(lambda v: v.validate_file(str(path))))


def default_chain_findings(path: Path) -> list[str]:
    """What is wrong with the ``@default`` chain from the root (empty: it reaches an
    NXdata whose @signal and @axes name existing datasets)."""
    with h5py.File(path, "r") as f:
        group: h5py.Group = f
        for _ in range(16):
            if nexus.nx_class(group) == "NXdata":
                return _nxdata_findings(group)
            name = nexus.read_text(group.attrs.get("default")).strip()
            if not name:
                return [f"{group.name}: no @default (class {nexus.nx_class(group) or 'none'})"]
            child = group.get(name)
            if not isinstance(child, h5py.Group):
                return [f"{group.name}: @default names {name!r}, which is not a group of it"]
            group = child
        return [f"{group.name}: @default chain longer than 16 groups"]


def _nxdata_findings(group: h5py.Group) -> list[str]:
    signal = nexus.read_text(group.attrs.get("signal")).strip()
    if not signal:
        return [f"{group.name}: NXdata without @signal"]
    found = []
    if not isinstance(group.get(signal), h5py.Dataset):
        found.append(f"{group.name}: @signal names {signal!r}, which is not a dataset of it")
    axes = group.attrs.get("axes")
    names = (
        []
        if axes is None
        else [
            nexus.read_text(a)
            for a in (axes if hasattr(axes, "__len__") and not isinstance(axes, str | bytes) else [axes])
        ]
    )
    for axis in names:
        if axis != "." and not isinstance(group.get(axis), h5py.Dataset):
            found.append(f"{group.name}: @axes names {axis!r}, which is not a dataset of it")
    return found


def _units_of(f: h5py.File) -> Iterator[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def visit(name: str, obj: h5py.HLObject) -> None:
        if "units" in obj.attrs:
            found.append(("/" + name, nexus.read_text(obj.attrs["units"])))

    f.visititems(visit)
    yield from found


def unit_findings(path: Path) -> list[str]:
    """Units that pint cannot parse, that it misreads, or of the wrong dimension."""
    ureg = _registry()
    found = []
    with h5py.File(path, "r") as f:
        for where, unit in _units_of(f):
            found += check_unit(ureg, where, unit)
    return found


# tokens that are no unit but that an application definition enumerates
NOT_UNITS = {"arbitrary"}  # NXcanSAS's I units: "1/m", "1/cm", "m2/g", "cm2/g", "arbitrary"


def _udunits_to_pint(text: str) -> str:
    """UDUNITS' exponent without an operator ("m2/g") as pint writes it ("m**2/g")."""
    return re.sub(r"(?<=[A-Za-z])(-?\d+)(?![\d.])", r"**\1", text)


def check_unit(ureg, where: str, unit: str) -> list[str]:
    text = unit.strip()
    if text in MISREAD:
        return [f"{where}: units {unit!r}: {MISREAD[text]}"]
    if text in NOT_UNITS:
        return []
    try:
        parsed = ureg.parse_units(_udunits_to_pint(text)) if text else ureg.dimensionless
    except Exception as exc:  # pint raises several kinds
        return [f"{where}: units {unit!r} do not parse ({type(exc).__name__})"]
    want = DIMENSIONS.get(where.rsplit("/", 1)[-1])
    if want is not None and ureg.get_dimensionality(want) != parsed.dimensionality:
        return [f"{where}: units {unit!r} are {parsed.dimensionality}, not {want}"]
    return []


def nxcansas_findings(path: Path) -> list[str]:
    """SASsource/radiation within NXcanSAS's enumeration; SASsample/name present."""
    found = []
    with h5py.File(path, "r") as f:
        for key, entry in f.items():
            if not (isinstance(entry, h5py.Group) and nexus.read_text(entry.get("definition")) == "NXcanSAS"):
                continue
            for name, obj in entry.items():
                cls = nexus.read_text(obj.attrs.get("canSAS_class"))
                if cls == "SASsample" and not isinstance(obj.get("name"), h5py.Dataset):
                    found.append(f"/{key}/{name}: SASsample without 'name'")
                if cls == "SASinstrument":
                    for sname, source in obj.items():
                        if nexus.read_text(source.attrs.get("canSAS_class")) != "SASsource":
                            continue
                        radiation = nexus.read_text(source.get("radiation"))
                        if "radiation" in source and radiation not in nxcansas.RADIATION:
                            found.append(
                                f"/{key}/{name}/{sname}/radiation: {radiation!r} is not one of NXcanSAS's values"
                            )
            if not any(nexus.read_text(o.attrs.get("canSAS_class")) == "SASsample" for o in entry.values()):
                found.append(f"/{key}: no SASsample")
    return found


def orso_findings(path: Path) -> list[str]:
    """An ORSO text file read back by orsopy; its columns' units parse with pint."""
    from orsopy import fileio

    try:
        datasets = fileio.load_orso(str(path))
    except Exception as exc:  # orsopy raises what its parsers raise
        return [f"{path.name}: orsopy cannot read it ({type(exc).__name__}: {exc})"]
    found = []
    if not datasets:
        found.append(f"{path.name}: no data set")
    ureg = _registry()
    for k, ds in enumerate(datasets):
        for col in ds.info.columns:
            unit = getattr(col, "unit", None)
            if unit:
                found += check_unit(ureg, f"{path.name}[{k}]/{col.name}", str(unit))
        if ds.data.ndim != 2 or ds.data.shape[1] < 3:
            found.append(f"{path.name}[{k}]: data of shape {ds.data.shape}, not (points, >= 3 columns)")
    return found
