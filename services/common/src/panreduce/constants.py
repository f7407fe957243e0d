"""Physical constants, from ``scipy.constants`` (CODATA as scipy ships it): the one
definition of h*c, the neutron's h/m and the rest in PaNReduce.

The values load on first use (PEP 562), so importing this module costs nothing and
``scipy.constants`` (about 0.3 s of start-up) is imported only when a constant is
read. Read them at call time (``constants.H_C_KEV_ANGSTROM``) in modules whose import
must stay fast; ``from panreduce.constants import X`` at a module's top level pays the
scipy import when that module is imported.

Names (units in the name or below):
    PLANCK              h, J s
    SPEED_OF_LIGHT      c, m/s
    ELEMENTARY_CHARGE   e, C (also J per eV)
    NEUTRON_MASS        m_n, kg
    ELECTRON_MASS       m_e, kg
    STANDARD_GRAVITY    g_n, m/s^2
    H_C_KEV_ANGSTROM    h c in keV Angstrom (12.3984...): lambda[A] = H_C_KEV_ANGSTROM / E[keV]
    H_C_EV_ANGSTROM     h c in eV Angstrom (12398.4...)
    H_C_EV_M            h c in eV m (1.2398...e-6)
    H_C_KEV_M           h c in keV m (1.2398...e-9)
    H_OVER_NEUTRON_MASS h / m_n in m^2/s
    NEUTRON_H_OVER_M    h / m_n in Angstrom m / microsecond (3956.03e-6):
                        lambda[A] = NEUTRON_H_OVER_M * t[us] / L[m]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "ELECTRON_MASS",
    "ELEMENTARY_CHARGE",
    "H_C_EV_ANGSTROM",
    "H_C_EV_M",
    "H_C_KEV_ANGSTROM",
    "H_C_KEV_M",
    "H_OVER_NEUTRON_MASS",
    "NEUTRON_H_OVER_M",
    "NEUTRON_MASS",
    "PLANCK",
    "SPEED_OF_LIGHT",
    "STANDARD_GRAVITY",
    "electron_wavelength_angstrom",
    "neutron_wavelength_angstrom",
    "xray_energy_kev",
    "xray_wavelength_angstrom",
]

_ANGSTROM = 1e-10

# Declared for readers and type checkers; bound on first read by __getattr__ below.
PLANCK: float
SPEED_OF_LIGHT: float
ELEMENTARY_CHARGE: float
NEUTRON_MASS: float
ELECTRON_MASS: float
STANDARD_GRAVITY: float
H_C_EV_M: float
H_C_KEV_M: float
H_C_EV_ANGSTROM: float
H_C_KEV_ANGSTROM: float
H_OVER_NEUTRON_MASS: float
NEUTRON_H_OVER_M: float


def _sc() -> Any:
    import scipy.constants as sc

    return sc


_DEFINITIONS: dict[str, Callable[[Any], float]] = {
    "PLANCK": lambda sc: sc.h,
    "SPEED_OF_LIGHT": lambda sc: sc.c,
    "ELEMENTARY_CHARGE": lambda sc: sc.e,
    "NEUTRON_MASS": lambda sc: sc.m_n,
    "ELECTRON_MASS": lambda sc: sc.m_e,
    "STANDARD_GRAVITY": lambda sc: sc.g,
    "H_C_EV_M": lambda sc: sc.h * sc.c / sc.e,
    "H_C_KEV_M": lambda sc: sc.h * sc.c / sc.e / 1e3,
    "H_C_EV_ANGSTROM": lambda sc: sc.h * sc.c / sc.e / _ANGSTROM,
    "H_C_KEV_ANGSTROM": lambda sc: sc.h * sc.c / sc.e / 1e3 / _ANGSTROM,
    "H_OVER_NEUTRON_MASS": lambda sc: sc.h / sc.m_n,
    # (m^2/s) -> (A m / us): 1 m^2/s = 1e10 A m / 1e6 us
    "NEUTRON_H_OVER_M": lambda sc: sc.h / sc.m_n / _ANGSTROM * 1e-6,
}


def __getattr__(name: str) -> float:
    definition = _DEFINITIONS.get(name)
    if definition is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = float(definition(_sc()))
    globals()[name] = value  # computed once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_DEFINITIONS))


def xray_wavelength_angstrom(energy_kev: Any) -> Any:
    """Photon wavelength (Angstrom) for ``energy_kev`` (keV); arrays pass through."""
    return __getattr__("H_C_KEV_ANGSTROM") / energy_kev


def xray_energy_kev(wavelength_angstrom: Any) -> Any:
    """Photon energy (keV) for ``wavelength_angstrom`` (Angstrom); arrays pass through."""
    return __getattr__("H_C_KEV_ANGSTROM") / wavelength_angstrom


def neutron_wavelength_angstrom(tof_us: Any, flight_path_m: Any) -> Any:
    """Neutron wavelength (Angstrom) after ``tof_us`` microseconds over ``flight_path_m``
    metres: lambda = h t / (m_n L)."""
    return __getattr__("NEUTRON_H_OVER_M") * tof_us / flight_path_m


def electron_wavelength_angstrom(voltage_v: Any) -> Any:
    """Relativistic de Broglie wavelength (Angstrom) of electrons accelerated through
    ``voltage_v`` volts: lambda = h / sqrt(2 m_e e V (1 + e V / (2 m_e c^2)))."""
    import numpy as np

    sc = _sc()
    ev = sc.e * np.asarray(voltage_v, dtype=float)
    lam = sc.h / np.sqrt(2.0 * sc.m_e * ev * (1.0 + ev / (2.0 * sc.m_e * sc.c**2))) / _ANGSTROM
    return float(lam) if np.ndim(lam) == 0 else lam
