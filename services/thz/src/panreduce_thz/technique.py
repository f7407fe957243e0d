"""The thz technique: glue between the kit and the TELBE reader, timing, binning and
spectra modules."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from panreduce.errors import FieldViolation, InvalidInput, InvalidParameters, InvalidRequest
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as _Technique
from panreduce_thz import report, spectra, telbe
from panreduce_thz.binning import BinnedWaveform, DelayAccumulator
from panreduce_thz.gating import pair_indices
from panreduce_thz.params import ThzParameters
from panreduce_thz.pipeline import PositionStats, RunStats, Settings, available_cores, process_pages
from panreduce_thz.pulse_table import PulseTable
from panreduce_thz.timing import bandpass_sos, stage_delay_ps

VERSION = "0.1.0"
MAX_BINS = 10_000_000


@dataclass(frozen=True)
class Run:
    layout: telbe.RunLayout
    background: np.ndarray
    positions: tuple[telbe.Position, ...]  # every position of the run, in stage order
    run_name: str


@dataclass
class ThzPart:
    """The binned sufficient statistics of a block of stage positions (and its pulses,
    when the pulse table is asked for)."""

    stats: RunStats
    run_name: str
    date: str | None
    pulses: dict[str, np.ndarray] | None = None


def _analyse(
    label: str, wave: BinnedWaveform, params: ThzParameters, f0: float | None, reference_ps: float | None
) -> tuple[report.Analysis, float | None]:
    try:
        prepared = spectra.prepare(wave.delay_ps, wave.signal, wave.error)
    except ValueError:
        return report.Analysis(label, wave, None, [], 0), f0
    spec = spectra.spectrum(prepared, window=params.window)
    if f0 is None:
        f0 = params.fundamental_thz or spectra.find_fundamental(spec, band_thz=params.fundamental_search_thz)
    hs = spectra.harmonics(prepared, f0, orders=params.harmonics, window=params.window, reference_ps=reference_ps)
    return report.Analysis(label, wave, spec, hs, prepared.filled), f0


class Technique(_Technique[ThzParameters, ThzPart]):
    name = "thz"
    version = VERSION
    title = "Pulse-resolved THz spectroscopy (HZDR TELBE)"
    description = (
        "Reads a TELBE run folder (timing-tool TIFFs and big-endian ADC traces per delay-stage "
        "position), times every pulse from its electro-optic timing-tool row with sub-pixel "
        "precision, gates the signal, sorts and bins the pulses by their jitter-corrected delay "
        "(bin centres, standard errors, pulse counts), and Fourier-analyses the waveform: "
        "windowed amplitude and power spectra, harmonic amplitudes and phases with uncertainties, "
        "compared with the stage-only waveform. Streams position by position; shardable by "
        "stage position."
    )
    Parameters = ThzParameters
    input_kinds = ("telbe/run-folder",)
    output_formats = ("nexus", "csv", "png", "hdf5")
    shardable = True
    shard_unit = "stage position"

    Part = ThzPart

    # -- the shard contract: one unit per stage position --------------------------------
    def units(self, inputs: Inputs, params: ThzParameters) -> list[tuple[int, telbe.Position]]:
        run = self._run(inputs)
        return list(enumerate(run.positions))  # each with its index in the run (the pulse table's)

    def reduce_block(
        self, block: Sequence[tuple[int, telbe.Position]], inputs: Inputs, params: ThzParameters, ctx: Context
    ) -> ThzPart:
        run = self._run(inputs)
        pulses, pages = [], []
        for i, (_, pos) in enumerate(block):
            ctx.progress(0.1 * i / len(block), "check", f"position {pos.token} mm")
            specs = [telbe.image_pages(n, p, width=run.background.size) for n, p in pos.images]
            n_cam = sum(s.rows for file in specs for s in file)
            adc = telbe.open_adc(*pos.adc, samples_per_pulse=params.samples_per_pulse)
            if n_cam != adc.shape[0]:
                raise InvalidInput(
                    pos.folder,
                    f"position {pos.token} mm: {n_cam} pulses in the timing-tool "
                    f"images but {adc.shape[0]} in the ADC file {pos.adc[0]} "
                    f"({params.samples_per_pulse} samples a pulse)",
                )
            pulses.append(n_cam)
            pages.append(specs)
        return self._bin(run, list(block), pulses, pages, params, ctx)

    def combine(self, parts: Sequence[ThzPart], params: ThzParameters) -> ThzPart:
        stats = parts[0].stats
        for p in parts[1:]:
            stats = stats.merge(p.stats)
        tables = [p.pulses for p in parts if p.pulses is not None]
        pulses = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]} if tables else None
        return ThzPart(stats, parts[0].run_name, parts[0].date, pulses)

    def write(self, result: ThzPart, params: ThzParameters, ctx: Context) -> Mapping[str, Any]:
        """The combined per-bin sufficient statistics (count, Σy, Σy²) are the numbers one
        binning of every pulse gives: analysed once, whichever way the job was split."""
        if result.stats.pulses == 0:
            raise InvalidInput(result.run_name or "run", "no pulses left to bin (check offset)")
        table = PulseTable.write(ctx.work_dir, result.pulses) if result.pulses is not None else None
        return self._finish(result.stats, params, ctx, result.date, result.run_name, table)

    @staticmethod
    def _run(inputs: Inputs) -> Run:
        files = [(f.name, f.path) for f in inputs.files]
        if not files:
            raise InvalidRequest("no files: give a TELBE run folder")
        run_name = inputs.items[0].root.name if inputs.items else ""
        layout = telbe.find_run(files, run_name=run_name)
        background = telbe.read_background(*layout.background)
        return Run(layout, background, layout.positions, run_name)

    def _bin(
        self,
        run: Run,
        block: list[tuple[int, telbe.Position]],
        pulses: list[int],
        pages: list[list[tuple[telbe.PageSpec, ...]]],
        params: ThzParameters,
        ctx: Context,
    ) -> ThzPart:
        width = run.background.size
        stage = [
            stage_delay_ps(p.position_mm, stage_zero_mm=params.stage_zero_mm, ps_per_mm=params.ps_per_mm)
            for _, p in block
        ]
        t_lo, t_hi = min(stage), max(stage) + width * params.pixel_to_ps
        if (t_hi - t_lo) / params.bin_ps > MAX_BINS:
            raise InvalidParameters(
                [
                    FieldViolation(
                        "bin_ps",
                        f"{params.bin_ps} ps makes more than {MAX_BINS} bins over the run's {t_hi - t_lo:.1f} ps",
                    )
                ]
            )
        if params.timing_window_px is not None and params.timing_window_px[1] > width:
            raise InvalidParameters(
                [
                    FieldViolation(
                        "timing_window_px",
                        f"stop {params.timing_window_px[1]} lies beyond the timing-tool rows' {width} pixels",
                    )
                ]
            )
        stats = RunStats(DelayAccumulator.covering(t_lo, t_hi, bin_ps=params.bin_ps), width)
        settings = Settings(
            params.pixel_to_ps,
            params.bin_ps,
            bandpass_sos(order=params.bandpass_order, low=params.bandpass[0], high=params.bandpass[1]),
            params.timing_method,
            params.subpixel_half_width_px,
            params.signal_gate,
            params.background_gate,
            threads=params.threads or available_cores(),
            timing_window=params.timing_window_px,
        )
        table = PulseTable(ctx.work_dir) if params.pulse_table else None
        total = max(sum(pulses), 1)
        done = 0
        pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="thz") if settings.threads > 1 else None
        buffers = telbe.PageBuffers(3)  # process_pages keeps at most 2 pages in use
        try:
            for j, ((k, pos), n, st, specs) in enumerate(zip(block, pulses, stage, pages, strict=True)):
                ctx.progress(0.1 + 0.9 * done / total, "timing", f"position {pos.token} mm ({j + 1}/{len(block)})")
                pstats = PositionStats(pos.position_mm, st)
                feed = self._pages(pos, n, specs, buffers, params, ctx)
                for got in process_pages(feed, run.background, st, settings, pool):
                    stats.add(pstats, got)
                    if table is not None:
                        table.append(got, k)
                stats.positions.append(pstats)
                done += n
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return ThzPart(stats, run.run_name, run.layout.date or None, table.read() if table else None)

    @staticmethod
    def _pages(
        pos: telbe.Position,
        n: int,
        specs: list[tuple[telbe.PageSpec, ...]],
        buffers: telbe.PageBuffers,
        params: ThzParameters,
        ctx: Context,
    ):
        """(raw rows, ADC traces) of the paired pulses of one position, page by page (the
        rows in ``buffers``' ring: each valid until two more pages have been read)."""
        adc = telbe.open_adc(*pos.adc, samples_per_pulse=params.samples_per_pulse)
        cam, _ = pair_indices(n, n, params.offset)
        lo, hi = (int(cam[0]), int(cam[-1]) + 1) if cam.size else (0, 0)
        start = 0
        for (name, path), spec in zip(pos.images, specs, strict=True):
            for page in telbe.iter_pages(name, path, spec, buffers):
                a, b = max(start, lo), min(start + page.shape[0], hi)
                if a < b:
                    yield page[a - start : b - start], adc[a - params.offset : b - params.offset]
                start += page.shape[0]
            ctx.check_cancelled()

    def _finish(
        self, stats: RunStats, params: ThzParameters, ctx: Context, date: str | None, run_name: str, pulse_table
    ) -> dict[str, Any]:
        ctx.progress(0.0, "spectra", "binning and Fourier analysis")
        corrected_wave = stats.corrected_waveform()
        ref = params.phase_reference_ps
        if ref is None and corrected_wave.delay_ps.size:
            ref = float(0.5 * (corrected_wave.delay_ps[0] + corrected_wave.delay_ps[-1]))
        corrected, f0 = _analyse("jitter-corrected", corrected_wave, params, None, ref)
        uncorrected, _ = _analyse("stage only", stats.uncorrected_waveform(params.pixel_to_ps), params, f0, ref)
        pix = params.pixel_to_ps
        report.write_nexus(
            ctx.output_path("thz.nxs", format="nexus"),
            corrected=corrected,
            uncorrected=uncorrected,
            stats=stats,
            pixel_to_ps=pix,
            program="panreduce-thz",
            version=VERSION,
            date=date,
            pulse_table=pulse_table,
        )
        report.write_csv(ctx.output_path("waveform.csv", format="csv", role="table"), corrected.wave)
        if params.plots:
            ctx.progress(0.5, "plots", "figures")
            report.plot_waveform(ctx.output_path("waveform.png", format="png", role="preview"), corrected, uncorrected)
            report.plot_spectrum(
                ctx.output_path("spectrum.png", format="png", role="preview"),
                corrected,
                uncorrected,
                band_thz=params.fundamental_search_thz,
            )
            report.plot_jitter(ctx.output_path("jitter.png", format="png", role="preview"), stats, pixel_to_ps=pix)
        mean_px, rms_px = stats.arrival_mean_rms_px()
        w = corrected.wave
        summary = {
            "run": run_name,
            "date": date or "",
            "pulses": stats.pulses,
            "positions": len(stats.positions),
            "pulses_outside_grid": stats.dropped,
            "timing_method": params.timing_method,
            "arrival_mean_px": mean_px,
            "jitter_rms_fs": rms_px * pix * 1000.0,
            "bins": int(w.count.size),
            "empty_bins": int((w.count == 0).sum()),
            "delay_range_ps": [float(w.delay_ps[0]), float(w.delay_ps[-1])] if w.count.size else [],
            "bin_ps": params.bin_ps,
            "window": params.window,
            "fundamental_thz": f0 if f0 is not None else None,
            "phase_reference_ps": ref,
            "harmonics": report.harmonic_rows(corrected.harmonics),
            "harmonics_uncorrected": report.harmonic_rows(uncorrected.harmonics),
        }
        return {k: _json(v) for k, v in summary.items()}


def _json(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, list):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    return v
