"""The Arcaro2020 recordings: conventions, MAT files, fetch, import into Brain-Score assemblies, the twin."""

from benchmarks_it_maps.data.assemblies import (ArcaroDataError, family_dir, format_summary, has_coord,
                                                import_arcaro2020, load_assembly, load_sidecar, load_stimulus_set,
                                                plot_site, response_maps, summary, window_mask)

__all__ = ["ArcaroDataError", "family_dir", "format_summary", "has_coord", "import_arcaro2020", "load_assembly",
           "load_sidecar", "load_stimulus_set", "plot_site", "response_maps", "summary", "window_mask"]
