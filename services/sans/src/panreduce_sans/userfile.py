"""The ISIS SANS user file (legacy command set), parsed into a typed description.

Every line is either understood, understood-but-not-implemented ("unsupported"), malformed
("invalid") or not a command at all ("unknown"); the last three are collected as
:class:`Problem` values carrying the 1-based line number, never dropped silently. The
commands follow the ISIS SANS user-file reference of the Mantid documentation (legacy
command set) and the meanings in the fact sheet ``loq-sans.md`` §4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["MergeSettings", "Problem", "QResolution", "TimeMask", "TransmissionFit", "UserFile", "parse_user_file"]

FitMethod = Literal["log", "linear", "polynomial", "off"]
Detector = Literal["main", "hab"]

_DETECTOR_ALIASES = {"MAIN": "main", "REAR": "main", "HAB": "hab", "FRONT": "hab"}
_INSTRUMENTS = ("LOQ", "SANS2D", "LARMOR", "ZOOM")


@dataclass(frozen=True)
class Problem:
    """A user-file line that was not (fully) used."""

    line: int
    text: str
    kind: Literal["unknown", "invalid", "unsupported"]
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.text!r}"


@dataclass(frozen=True)
class TimeMask:
    t_min: float  # µs
    t_max: float  # µs
    detector: Detector | None  # None: every detector bank
    line: int


@dataclass(frozen=True)
class TransmissionFit:
    method: FitMethod = "log"
    order: int = 1  # polynomial order (method "polynomial")
    lambda_min: float | None = None  # Å; None: the reduction's wavelength range
    lambda_max: float | None = None


@dataclass
class MergeSettings:
    """How DET/MERGED joins the banks: ``I_hab' = rescale*I_hab + shift`` (DET/RESCALE,
    DET/SHIFT), optionally fitted to the main bank over ``fit_range`` (DET/RESCALE/FIT,
    DET/SHIFT/FIT), then combined over ``overlap`` (DET/OVERLAP; default: where both have data)."""

    rescale: float = 1.0
    shift: float = 0.0  # 1/cm
    fit_rescale: bool = False
    fit_shift: bool = False
    fit_range: tuple[float, float] | None = None  # 1/Å
    overlap: tuple[float, float] | None = None  # 1/Å


@dataclass
class QResolution:
    on: bool = False
    a1: float | None = None  # mm, source aperture diameter
    a2: float | None = None  # mm, sample aperture diameter
    h1: float | None = None  # mm, rectangular source aperture height
    w1: float | None = None
    h2: float | None = None
    w2: float | None = None
    collimation_length: float | None = None  # m
    delta_r: float | None = None  # mm, virtual ring width
    moderator_file: str | None = None


@dataclass
class UserFile:
    """The settings of one user file. Lengths as written in the file (mm for radii/centres,
    µs for times, Å for wavelength, 1/Å for Q)."""

    text: str = ""
    instrument: str | None = None
    detector: Literal["main", "hab", "both", "merged"] = "main"
    radius_min: float | None = None  # mm
    radius_max: float | None = None  # mm
    wavelength_rebin: list[float] | None = None  # Mantid rebin string, Å
    q_rebin: list[float] | None = None  # Mantid rebin string, 1/Å
    qxy_max: float | None = None  # 1/Å
    qxy_step: float | None = None  # 1/Å; negative: logarithmic
    events_binning: list[float] | None = None  # µs rebin string for event data
    radius_cut: float = 0.0  # mm (L/Q/RCUT)
    wave_cut: float = 0.0  # Å (L/Q/WCUT)
    monitor_background: tuple[float, float] | None = None  # µs, all monitors
    monitor_background_by_spectrum: dict[int, tuple[float, float] | None] = field(default_factory=dict)
    transmission_background: tuple[float, float] | None = None  # µs
    transmission_fit: dict[str, TransmissionFit] = field(default_factory=dict)  # "sample"/"can"
    prompt_peak: tuple[float, float] | None = None  # µs, from FIT/MONITOR
    direct_files: dict[str, str] = field(default_factory=dict)  # detector -> file name
    flat_files: dict[str, str] = field(default_factory=dict)
    mask_rows: list[tuple[Detector, int]] = field(default_factory=list)  # (bank, iy)
    mask_columns: list[tuple[Detector, int]] = field(default_factory=list)  # (bank, ix)
    mask_spectra: list[int] = field(default_factory=list)
    # box masks "Hn>Hm+Vk>Vl": (bank, (row lo, row hi), (column lo, column hi)), inclusive
    mask_boxes: list[tuple[Detector, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    # MASK/LINE: (width mm, angle deg, start x mm, y mm relative to the beam axis, or None);
    # at most one: a later MASK/LINE replaces an earlier one, as in Mantid
    mask_lines: list[tuple[float, float, float | None, float | None]] = field(default_factory=list)
    # L/PHI sector: (phi_min deg, phi_max deg, mirror)
    phi: tuple[float, float, bool] | None = None
    time_masks: list[TimeMask] = field(default_factory=list)
    sample_offset: float = 0.0  # mm, along the beam
    sample_path: bool = False  # wide-angle transmission correction
    centre: tuple[float, float] | None = None  # mm, main bank
    centre_hab: tuple[float, float] | None = None  # mm
    scales: list[float] = field(default_factory=list)
    incident_monitor: int | None = None
    incident_monitor_interpolate: bool = False
    transmission_monitor: int | None = None
    monitor_lengths: dict[int, float] = field(default_factory=dict)  # spectrum -> z (m)
    gravity: bool = False
    gravity_extra_length: float = 0.0  # m
    merge: MergeSettings = field(default_factory=MergeSettings)
    qresol: QResolution = field(default_factory=QResolution)
    prints: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # setting -> line that set it

    def problems_of(self, *kinds: str) -> list[Problem]:
        return [p for p in self.problems if not kinds or p.kind in kinds]

    def fit_for(self, which: Literal["sample", "can"]) -> TransmissionFit:
        """The transmission fit for the sample or the can (default: log fit)."""
        return self.transmission_fit.get(which, TransmissionFit())


class _Invalid(Exception):
    pass


def _floats(tokens: list[str], n_min: int, n_max: int | None = None) -> list[float]:
    n_max = n_min if n_max is None else n_max
    if not n_min <= len(tokens) <= n_max:
        want = str(n_min) if n_min == n_max else f"{n_min} to {n_max}"
        raise _Invalid(f"expected {want} number(s), got {len(tokens)}")
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise _Invalid(f"not a number in {' '.join(tokens)!r}") from None


def _split_numbers(rest: str) -> list[str]:
    return [t for t in re.split(r"[\s,]+", rest.strip()) if t]


def _step_with_mode(token: str) -> float:
    """'.035/LOG' -> -0.035, '.002/lin' -> 0.002, '0.5' -> 0.5."""
    value, _, mode = token.partition("/")
    try:
        step = float(value)
    except ValueError:
        raise _Invalid(f"not a step: {token!r}") from None
    mode = mode.upper()
    if mode in ("", "LIN", "LINEAR"):
        return abs(step)
    if mode in ("LOG", "LOGARITHMIC"):
        return -abs(step)
    raise _Invalid(f"unknown binning mode {mode!r} (LIN or LOG)")


def _range_with_step(rest: str) -> list[float]:
    """'w1 w2 step[/LIN|/LOG]' or a comma rebin string -> rebin params."""
    if "," in rest:
        params = _floats(_split_numbers(rest), 3, 99)
        if len(params) % 2 == 0:
            raise _Invalid("a rebin string needs an odd number of values")
        return params
    tokens = rest.split()
    if len(tokens) == 3:
        lo, hi = _floats(tokens[:2], 2)
        return [lo, _step_with_mode(tokens[2]), hi]
    if len(tokens) == 4:  # 'w1 w2 step LOG'
        lo, hi = _floats(tokens[:2], 2)
        return [lo, _step_with_mode(f"{tokens[2]}/{tokens[3]}"), hi]
    raise _Invalid("expected 'min max step[/LIN|/LOG]' or a comma-separated rebin string")


_MASK_SPEC = re.compile(r"^([HVS])(\d+)(?:>\1?(\d+))?$")


def parse_user_file(text: str) -> UserFile:
    """Parse the text of an ISIS SANS user file; problems are collected, not raised."""
    uf = UserFile(text=text)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("!"):
            continue
        try:
            _parse_line(uf, line, number)
        except _Invalid as exc:
            uf.problems.append(Problem(number, line, "invalid", str(exc)))
    return uf


def _unsupported(uf: UserFile, number: int, line: str, what: str) -> None:
    uf.problems.append(Problem(number, line, "unsupported", f"{what} is not implemented"))


def _box(spec: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``Hn[>Hm]+Vk[>Vl]`` (either order): the inclusive row and column ranges of a box mask."""
    ranges: dict[str, tuple[int, int]] = {}
    for part in spec.split("+"):
        m = _MASK_SPEC.match(part)
        if not m or m.group(1) == "S":
            raise _Invalid(f"cannot read box mask {spec!r} (Hn>Hm+Vk>Vl)")
        if m.group(1) in ranges:
            raise _Invalid(f"a box mask needs one H and one V range: {spec!r}")
        a, b = int(m.group(2)), int(m.group(3) or m.group(2))
        ranges[m.group(1)] = (min(a, b), max(a, b))
    if set(ranges) != {"H", "V"}:
        raise _Invalid(f"a box mask needs one H and one V range: {spec!r}")
    return ranges["H"], ranges["V"]


def _parse_merge(uf: UserFile, parts: list[str], rest: str) -> None:
    """DET/RESCALE x, DET/SHIFT y, DET/RESCALE/FIT [q1 q2], DET/SHIFT/FIT [q1 q2], DET/OVERLAP q1 q2."""
    what, sub = parts[0], parts[1:]
    merge = uf.merge
    if what == "OVERLAP":
        if sub:
            raise _Invalid("DET/OVERLAP takes no qualifier")
        lo, hi = _floats(rest.split(), 2)
        if not 0 <= lo < hi:
            raise _Invalid("DET/OVERLAP needs 0 <= q1 < q2")
        merge.overlap = (lo, hi)
        return
    if sub == ["FIT"]:
        q = _floats(rest.split(), 0, 2)
        if len(q) == 1 or (q and not 0 <= q[0] < q[1]):
            raise _Invalid(f"DET/{what}/FIT takes no range or a range q1 < q2")
        if what == "RESCALE":
            merge.fit_rescale = True
        else:
            merge.fit_shift = True
        if q:
            merge.fit_range = (q[0], q[1])
        return
    if sub:
        raise _Invalid(f"unknown qualifier DET/{what}/{'/'.join(sub)}")
    value = _floats(rest.split(), 1)[0]
    if what == "RESCALE":
        if value <= 0:
            raise _Invalid("DET/RESCALE must be positive")
        merge.rescale = value
    else:
        merge.shift = value


def _parse_line(uf: UserFile, line: str, n: int) -> None:
    upper = line.upper()
    head, _, rest = line.partition(" ")
    uhead = head.upper()
    if upper in _INSTRUMENTS:
        uf.instrument = upper
        return
    if uhead == "PRINT":
        uf.prints.append(rest.strip())
        return

    # ---- DET ---------------------------------------------------------------------------
    if uhead.startswith("DET/"):
        what = uhead[4:]
        if what in _DETECTOR_ALIASES:
            uf.detector = _DETECTOR_ALIASES[what]  # type: ignore[assignment]
        elif what in ("BOTH", "MERGED", "MERGE"):
            uf.detector = "both" if what == "BOTH" else "merged"
        elif what.split("/")[0] in ("RESCALE", "SHIFT", "OVERLAP"):
            _parse_merge(uf, what.split("/"), rest)
            uf.lines[f"DET/{what.split('/')[0]}"] = n
            return
        elif what.startswith("CORR"):
            _unsupported(uf, n, line, "detector position corrections (DET/CORR)")
            return
        else:
            raise _Invalid(f"unknown detector {what!r} (MAIN, REAR, HAB, FRONT, BOTH, MERGED)")
        uf.lines["detector"] = n
        return

    # ---- MASK --------------------------------------------------------------------------
    if uhead == "MASK" or uhead.startswith("MASK/"):
        parts = uhead.split("/")[1:]
        if parts == ["CLEAR"]:
            uf.mask_rows.clear()
            uf.mask_columns.clear()
            uf.mask_spectra.clear()
            uf.mask_boxes.clear()
            uf.mask_lines.clear()
            return
        if parts in (["CLEAR", "TIME"], ["CLEAR", "T"]):
            uf.time_masks.clear()
            return
        detector: Detector | None = None
        if parts and parts[0] in _DETECTOR_ALIASES:
            detector = _DETECTOR_ALIASES[parts[0]]  # type: ignore[assignment]
            parts = parts[1:]
        if parts in (["T"], ["TIME"]):
            t_min, t_max = _floats(rest.split(), 2)
            if t_max <= t_min:
                raise _Invalid("time mask needs t_min < t_max")
            uf.time_masks.append(TimeMask(t_min, t_max, detector, n))
            return
        if parts == ["LINE"]:
            if detector == "hab":
                raise _Invalid("MASK/LINE masks a beam-stop arm on the main (rear) bank only")
            values = _floats(rest.split(), 2, 4)
            if len(values) == 3:
                raise _Invalid("MASK/LINE width angle [x y]: give both x and y or neither")
            if values[0] <= 0:
                raise _Invalid("MASK/LINE width must be positive")
            x, y = (values[2], values[3]) if len(values) == 4 else (None, None)
            uf.mask_lines[:] = [(values[0], values[1], x, y)]  # one arm: a later line replaces it (Mantid)
            uf.lines["MASK/LINE"] = n
            return
        if parts:
            raise _Invalid(f"unknown mask qualifier /{'/'.join(parts)}")
        specs = rest.upper().split()
        if not specs:
            raise _Invalid("MASK needs Hn, Vn, Sn or ranges such as H126>H127")
        bank: Detector = detector or "main"
        for spec in specs:
            if "+" in spec:
                uf.mask_boxes.append((bank, *_box(spec)))
                continue
            m = _MASK_SPEC.match(spec)
            if not m:
                raise _Invalid(f"cannot read mask {spec!r} (Hn, Vn, Sn, Hn>Hm, Vn>Vm, Sn>Sm)")
            kind, a, b = m.group(1), int(m.group(2)), int(m.group(3) or m.group(2))
            lo, hi = min(a, b), max(a, b)
            if kind == "H":
                uf.mask_rows.extend((bank, i) for i in range(lo, hi + 1))
            elif kind == "V":
                uf.mask_columns.extend((bank, i) for i in range(lo, hi + 1))
            else:
                uf.mask_spectra.extend(range(lo, hi + 1))
        return

    # ---- L/ limits -----------------------------------------------------------------------
    if uhead.startswith("L/"):
        what = uhead[2:]
        if what == "R":
            values = _floats(rest.split(), 2, 3)
            uf.radius_min, uf.radius_max = values[0], values[1]
        elif what == "WAV":
            uf.wavelength_rebin = _range_with_step(rest)
        elif what == "Q":
            uf.q_rebin = _range_with_step(rest)
        elif what == "QXY":
            tokens = rest.split()
            if len(tokens) != 3:
                raise _Invalid("expected 'L/QXY min max step[/LIN|/LOG]'")
            _lo, hi = _floats(tokens[:2], 2)
            uf.qxy_max, uf.qxy_step = hi, _step_with_mode(tokens[2])
        elif what == "EVENTSTIME":
            uf.events_binning = _floats(_split_numbers(rest), 3, 99)
        elif what in ("Q/RCUT", "Q/WCUT"):
            value = _floats(rest.split(), 1)[0]
            if value < 0:
                raise _Invalid("cuts must not be negative")
            if what == "Q/RCUT":
                uf.radius_cut = value
            else:
                uf.wave_cut = value
        elif what in ("PHI", "PHI/NOMIRROR"):
            lo, hi = _floats(rest.split(), 2)
            if not (-180 <= lo <= 180 and -180 <= hi <= 180):
                raise _Invalid("L/PHI angles must be in -180..180 degrees")
            uf.phi = (lo, hi, what == "PHI")
        else:
            raise _Invalid(f"unknown limit L/{what}")
        uf.lines[f"L/{what}"] = n
        return

    # ---- BACK ----------------------------------------------------------------------------
    if uhead.startswith("BACK/"):
        parts = uhead.split("/")[1:]
        if parts == ["MON", "TIMES"]:
            uf.monitor_background = tuple(_floats(rest.split(), 2))  # type: ignore[assignment]
        elif len(parts) == 2 and re.fullmatch(r"M\d+", parts[0]) and parts[1] in ("TIMES", "OFF"):
            spec = int(parts[0][1:])
            uf.monitor_background_by_spectrum[spec] = None if parts[1] == "OFF" else tuple(_floats(rest.split(), 2))  # type: ignore[assignment]
        elif parts == ["MON", "OFF"]:
            uf.monitor_background = None
        elif parts == ["TRANS"]:
            uf.transmission_background = tuple(_floats(rest.split(), 2))  # type: ignore[assignment]
        else:
            raise _Invalid(f"unknown background command BACK/{'/'.join(parts)}")
        return

    # ---- FIT -----------------------------------------------------------------------------
    if uhead.startswith("FIT/"):
        parts = uhead.split("/")[1:]
        if parts and parts[0] == "MONITOR":
            uf.prompt_peak = tuple(_floats(rest.split(), 2))  # type: ignore[assignment]
            return
        if not parts or parts[0] != "TRANS":
            raise _Invalid(f"unknown fit command FIT/{'/'.join(parts)}")
        parts = parts[1:]
        targets = ["sample", "can"]
        if parts and parts[0] in ("SAMPLE", "CAN"):
            targets = [parts[0].lower()]
            parts = parts[1:]
        if not parts:
            raise _Invalid("FIT/TRANS needs a method (LOG, YLOG, LIN, LINEAR, POLYNOMIALn, OFF, CLEAR)")
        method_token = parts[0]
        order = 1
        if method_token in ("LOG", "YLOG"):
            method: FitMethod = "log"
        elif method_token in ("LIN", "LINEAR", "STRAIGHT"):
            method = "linear"
        elif method_token.startswith("POLYNOMIAL"):
            method = "polynomial"
            try:
                order = int(method_token[len("POLYNOMIAL") :] or "2")
            except ValueError:
                raise _Invalid(f"bad polynomial order in {method_token!r}") from None
            if not 2 <= order <= 6:
                raise _Invalid("polynomial order must be 2 to 6")
        elif method_token in ("OFF", "CLEAR"):
            method = "off"
        else:
            raise _Invalid(f"unknown transmission fit {method_token!r}")
        lam = _floats(rest.split(), 0, 2)
        if len(lam) == 1:
            raise _Invalid("a fit range needs two wavelengths")
        fit = TransmissionFit(method, order, *(lam or (None, None)))
        for t in targets:
            uf.transmission_fit[t] = fit
        uf.lines["FIT/TRANS"] = n
        return

    # ---- MON -----------------------------------------------------------------------------
    if uhead.startswith("MON/"):
        key, eq, value = line.partition("=")
        ukey = key.strip().upper()
        value = value.strip()
        if not eq:
            raise _Invalid("MON/... commands need '='")
        parts = ukey.split("/")[1:]
        if parts[0] in ("DIRECT", "FLAT"):
            target = "main"
            if len(parts) > 1:
                if parts[1] not in _DETECTOR_ALIASES:
                    raise _Invalid(f"unknown detector {parts[1]!r}")
                target = _DETECTOR_ALIASES[parts[1]]
            if not value:
                raise _Invalid("no file name")
            (uf.direct_files if parts[0] == "DIRECT" else uf.flat_files)[target] = value
            if parts[0] == "DIRECT" and len(parts) == 1:
                uf.direct_files.setdefault("hab", value)  # MON/DIRECT applies to both banks
            uf.lines[f"MON/{parts[0]}/{target}"] = n
        elif parts == ["HAB"]:
            uf.direct_files["hab"] = value
        elif parts[0] == "SPECTRUM":
            number, _, flag = value.partition("/")
            uf.incident_monitor = int(_floats([number], 1)[0])
            uf.incident_monitor_interpolate = flag.strip().upper() == "INTERPOLATE"
        elif parts[:2] == ["TRANS", "SPECTRUM"]:
            number, _, _flag = value.partition("/")
            uf.transmission_monitor = int(_floats([number], 1)[0])
        elif parts[0] == "LENGTH":
            tokens = value.split("/")[0].split()
            z, spec = _floats(tokens, 2)
            uf.monitor_lengths[int(spec)] = z
        elif parts[0] in ("HABEFF", "HABPATH"):
            _unsupported(uf, n, line, "HAB efficiency/path corrections")
        else:
            raise _Invalid(f"unknown monitor command {ukey}")
        return

    # ---- SAMPLE ------------------------------------------------------------------------
    if uhead.startswith("SAMPLE/"):
        parts = uhead.split("/")[1:]
        if parts == ["OFFSET"]:
            uf.sample_offset = _floats(rest.split(), 1)[0]
            uf.lines["SAMPLE/OFFSET"] = n
        elif parts in (["PATH", "ON"], ["PATH", "OFF"]):
            uf.sample_path = parts[1] == "ON"
        else:
            raise _Invalid(f"unknown sample command SAMPLE/{'/'.join(parts)}")
        return

    # ---- SET -------------------------------------------------------------------------------
    if uhead == "SET":
        sub, _, args = rest.strip().partition(" ")
        usub = sub.upper()
        if usub in ("CENTRE", "CENTER", "CENTRE/MAIN", "CENTRE/REAR", "CENTER/MAIN", "CENTER/REAR"):
            values = _floats(args.split(), 2, 4)  # the pixel sizes after x y are ignored
            uf.centre = (values[0], values[1])
            uf.lines["SET CENTRE"] = n
        elif usub in ("CENTRE/HAB", "CENTRE/FRONT", "CENTER/HAB", "CENTER/FRONT"):
            values = _floats(args.split(), 2, 4)
            uf.centre_hab = (values[0], values[1])
        elif usub == "SCALES":
            uf.scales = _floats(args.split(), 1, 5)
            if uf.scales[0] <= 0:
                raise _Invalid("the absolute scale must be positive")
            uf.lines["SET SCALES"] = n
        else:
            raise _Invalid(f"unknown SET command {sub!r}")
        return

    # ---- GRAVITY, QRESOL, TRANS ----------------------------------------------------------
    if uhead == "GRAVITY":
        value = rest.strip().upper()
        if value not in ("ON", "OFF"):
            raise _Invalid("GRAVITY ON or GRAVITY OFF")
        uf.gravity = value == "ON"
        uf.lines["GRAVITY"] = n
        return
    if uhead.startswith("GRAVITY/LEXTRA"):
        uf.gravity_extra_length = _floats([line.partition("=")[2] or rest], 1)[0]
        return
    if uhead.startswith("QRESOL"):
        key, eq, value = line.partition("=")
        ukey = key.strip().upper()
        if ukey in ("QRESOL/ON", "QRESOL/OFF"):
            uf.qresol.on = ukey.endswith("ON")
            uf.lines["QRESOL"] = n
            return
        names = {
            "QRESOL/A1": "a1",
            "QRESOL/A2": "a2",
            "QRESOL/H1": "h1",
            "QRESOL/W1": "w1",
            "QRESOL/H2": "h2",
            "QRESOL/W2": "w2",
            "QRESOL/LCOLLIM": "collimation_length",
            "QRESOL/DELTAR": "delta_r",
        }
        if ukey == "QRESOL/MODERATOR" and eq:
            uf.qresol.moderator_file = value.strip()
            return
        if ukey in names and eq:
            setattr(uf.qresol, names[ukey], _floats([value.strip()], 1)[0])
            return
        raise _Invalid(f"unknown resolution command {ukey}")
    if uhead.startswith("TRANS/"):
        _unsupported(uf, n, line, "transmission ROI/radius/spectrum selection (TRANS/...)")
        return
    uf.problems.append(Problem(n, line, "unknown", "unknown command"))
