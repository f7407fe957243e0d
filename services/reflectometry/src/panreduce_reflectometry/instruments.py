"""Instrument descriptions: small, cited, typed data (no code paths per instrument).

Lengths in metres unless the name says otherwise, angles in degrees, wavelengths in Å.
A new reflectometer is a new :class:`Instrument` value; the readers fill in what each
run records itself (detector translation, chopper phases, slit gaps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Placement = Literal["vertical_shift", "recorded"]


@dataclass(frozen=True)
class ChopperSystem:
    """A disc-chopper pair that defines the time origin (Platypus)."""

    disc_openings_deg: tuple[float, ...]  # angular opening of discs 1..n
    disc_radius_mm: float


@dataclass(frozen=True)
class Instrument:
    name: str
    facility: str
    source_to_sample_m: float  # L1 (for a chopper instrument: per run, from the file)
    detector_distance_m: float  # along the beam, sample -> detector plane
    pixel_height_m: float  # pixel extent in the scattering plane
    placement: Placement  # how the detector stands: moved to 2θ, or as the file records
    wavelength_range_angstrom: tuple[float, float]
    i0_monitor_spectrum: int | None  # spectrum number of the incident-beam monitor (None: scalar monitor)
    monitor_flight_path_m: float | None  # source -> I0 monitor
    monitor_background_angstrom: tuple[float, float] | None
    monitor_integration_angstrom: tuple[float, float] | None
    slit_positions_m: tuple[float, float] | None  # the two collimation slits, along z
    citation: str
    first_pixel_y_m: float = 0.0  # y of pixel 0 relative to the detector reference point
    pixel_pitch_m: float = 0.0
    first_pixel_spectrum: int = 0  # spectrum number of pixel 0
    n_pixels: int = 0
    chopper: ChopperSystem | None = None
    # θ from the beams' heights by default when a direct beam is given: the direct beam is
    # measured on the same detector, whose height is recorded per run (refnx's method)
    direct_beam_theta: bool = False
    # θ(λ) corrected for gravity by default: a horizontal-beam instrument whose files record the
    # collimation slits' distances (Platypus: 0.5° at 18 Å is 4 % larger than at 3 Å)
    gravity_default: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


OFFSPEC = Instrument(
    name="OFFSPEC",
    facility="ISIS",
    source_to_sample_m=23.83,
    detector_distance_m=3.62,
    pixel_height_m=0.5185e-3,
    placement="vertical_shift",  # SpecularReflectionPositionCorrect, VerticalShift to 2θ = 2·ThetaIn
    wavelength_range_angstrom=(2.0, 14.0),
    i0_monitor_spectrum=2,
    monitor_flight_path_m=18.21,
    monitor_background_angstrom=(15.0, 20.0),
    monitor_integration_angstrom=(2.0, 14.0),
    slit_positions_m=None,  # selog slit gaps are not trustworthy in the 2018 files
    first_pixel_y_m=-0.2074,
    pixel_pitch_m=0.000519177,
    first_pixel_spectrum=5,
    n_pixels=768,
    citation=(
        "Mantid instrument/OFFSPEC_Definition.xml (revision of 2018-08-07, WLSF detector at "
        "z = 3.62 m) and OFFSPEC_Parameters.xml; ../shared/reference/offspec-reflectometry.md"
    ),
)

INTER = Instrument(
    name="INTER",
    facility="ISIS",
    source_to_sample_m=17.037,
    detector_distance_m=3.163,
    pixel_height_m=0.000606,
    placement="recorded",  # the processed workspace holds every pixel's (r, 2θ)
    wavelength_range_angstrom=(1.5, 17.0),
    i0_monitor_spectrum=3,  # I0MonitorIndex 2 = workspace index 2 = spectrum 3 (monitor 3, z = -0.252 m)
    monitor_flight_path_m=17.037 - 0.252,
    monitor_background_angstrom=(17.0, 18.0),
    monitor_integration_angstrom=(4.0, 10.0),
    slit_positions_m=(-2.236, -0.313),
    citation=(
        "Mantid INTER IDF (valid from 2020-02-14) and parameter map as saved in "
        "INTER_61440_TOF_MantidSave.nxs (reflectivity/file_format @ e4e58cca)"
    ),
)

PLATYPUS = Instrument(
    name="PLATYPUS",
    facility="ANSTO",
    source_to_sample_m=0.0,  # per run: chopper-pair midpoint -> sample, from the file's parameters
    detector_distance_m=0.0,  # per run: detector longitudinal translation
    pixel_height_m=0.0,  # per run: pitch of y_pixel_offset
    placement="recorded",
    wavelength_range_angstrom=(2.8, 18.0),
    i0_monitor_spectrum=None,  # bm1_counts: one integrated beam-monitor count per run
    monitor_flight_path_m=None,
    monitor_background_angstrom=None,
    monitor_integration_angstrom=None,
    slit_positions_m=None,  # per run: slit2/slit3 distances from the file
    chopper=ChopperSystem(disc_openings_deg=(60.0, 10.0, 25.0, 60.0), disc_radius_mm=350.0),
    direct_beam_theta=True,
    gravity_default=True,
    citation=(
        "ANSTO Platypus NeXus (SICS) layout of refnx-testdata @ 868ae8cd; disc openings and "
        "time-origin convention as documented in refnx.reduce.platypusnexus (BSD-3)"
    ),
    notes=(
        "time origin: the trailing edge of the master disc, corrected by the recorded phase "
        "offsets; no gravity correction of the phase opening",
    ),
)

INSTRUMENTS = {i.name: i for i in (OFFSPEC, INTER, PLATYPUS)}
